"""DAG wiring shared by the DAG files: dataset specs and the DAG factories. Nothing here
imports torch, onnxruntime or pandas; tasks import the pipeline when they run."""
