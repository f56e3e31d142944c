"""The replay simulator: a real access log, time-forward, through the real limiter engine, with
injected abuse and a simulated backend; the baselines every policy is judged against.

``trace`` reads a log into arrays; ``scenarios`` builds one run's demand (the evaluated part of
the trace, amplified when light, plus what a scenario injects) and sizes the backend;
``backend`` is the multi-worker queue; ``policies`` are where buckets come from (the model
plugs into ``ModelPolicy``); ``replay`` is the event loop; ``metrics`` what a run is judged on;
``run`` the grid of scenarios x policies x seeds. Nothing here imports at package import time.
"""
