"""The engine that runs the algorithm: the run (prepare, build, start or resume, then rounds),
the callbacks after each round, the client store, the local trainer, the serial backend and the
mirror of a run folder kept at a URI. ``fedlora_ray.algorithm`` holds the algorithm itself: the
round, the state, the schemes, aggregation, sampling and the server step."""
