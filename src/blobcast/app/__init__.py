"""The use cases, one module each, every public function a short run of
named steps: convert, inspect, verify, run, modularize, draw,
training_step. The command line and the public API (blobcast.api) call
these."""
