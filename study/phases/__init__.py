"""The phases of a study, each reading the study record: search (Tune + the policy), finish
(the final test, the summary), confirm (seeded reruns around the best), report. They only look
forward: no phase imports a later one or the command line that composes them."""
