"""``openclaw demo``: the whole loop on one machine, on embedded defaults, in a minute or two.

Stages, each with a progress bar (``docs/demo.md`` shows the output):

1. **ingest** the trace (the NASA day by default) into a DuckDB file in the work directory;
2. **train** a model on its first half (:func:`openclaw.model.train.run_train`, as
   ``openclaw train --head 0.5``) and register it in a registry in the work directory;
3. **validate** it against the static baseline on the simulator's scraper scenario
   (:func:`openclaw.sim.validate.replay_both`, the gate of ``openclaw validate``), then promote
   it to champion whatever the verdict, and say which it was;
4. **serve** the Rating API (:func:`openclaw.service.server.build`, policy_mode ``model``, the
   memory store, enforce mode) on a free loopback port, and post the trace before the replay
   as telemetry, so the service knows the trace's clients as it would after serving them;
5. **replay** part of the second half (the model never saw it) over real HTTP, with the
   simulator's scraper in it (a new client at a steady 4 requests/s of trace time, 8 times
   the busiest minute of any client of the trace): each request a ``GET /api/v1/rate``, each
   answer reported back as telemetry (``POST /api/v1/telemetry``) as the protected API would;
6. **report**: per class (legitimate clients, the scraper) the requests sent, admitted (200)
   and throttled (429), counted from the HTTP answers and checked against the service's own
   ``openclaw_decisions_total``; where each client's limits came from (``GET
   /api/v1/params`` before its first request under each table); plots.

Time. The learned policy decides at window boundaries (``window_s``, 300 s) on its injected
wall clock, and buckets refill on the store's clock. Both are one :class:`FakeClock` that the
driver moves to each request's trace time before sending it, so the service lives through the
replayed hour as it happened (windows, refills, the close delay), as fast as it can answer: an
hour of trace takes some 10 to 20 s. At each boundary the driver posts the window's telemetry,
pushes the queue through to the online features (as its timer would), moves the clock past
the close delay and waits for the service's background task to publish the new table, as
``tests/test_service_learned.py`` does.

Requests go one at a time on two keep-alive connections (one per class); legitimate clients
do not retry a 429 (the simulator's retries are what ``validate`` judges).

Settings the demo chooses (the rest come from the environment, ``OPENCLAW_*``):

* the first half of the trace trains (``openclaw simulate`` trains on a third, but the NASA
  day's first third is its quiet night: 489 (client, next window) pairs against 703);
* ``train_coverage`` 0.98, the coverage ``docs/evaluation.md`` settled on;
* ``model_min_refill_rate`` one request per label horizon (1/60 s): the simulator floors
  every bucket so (``sim.policies``), and without the floor a predicted rate of 0 leaves a
  bucket the service keeps across windows (the simulator refills it at every boundary)
  empty for good;
* the policy file's one tier, which clients without a window of history get: what the
  simulator gives a client the model knows nothing of (``new_client_default``, the 99th
  percentile of the training part's first-window labels), so the service runs the policy
  ``validate`` judged.
"""

from openclaw.demo.plan import DEFAULT_TRACE, DemoOptions, resolve_trace
from openclaw.demo.run import run_demo

__all__ = ["DEFAULT_TRACE", "DemoOptions", "resolve_trace", "run_demo"]
