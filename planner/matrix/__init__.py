"""The probe measurement matrix: file model (:mod:`.spec`), GPU-time budget (:mod:`.budget`), the
estimate-vs-measured summary and CI check (:mod:`.summary`) and the calibration / throughput
derivations from measured runs (:mod:`.derive`). Pure: no torch, no subprocess (the runner is
:mod:`probes.matrix`).
"""
