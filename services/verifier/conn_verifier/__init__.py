"""conn_verifier: verification snapshots after each consequential step.

Consumes `conn.events` (group `conn-verifier`), waits the runbook's settle
window, samples every region's metrics across the verification window, reads
the control-plane state the step should have produced (read-only), asks the
pure core (`conn_core.verdict.judge`) for a verdict and appends one
`VerificationSnapshot` per step / verify directive. The fold derives the hold.
"""
