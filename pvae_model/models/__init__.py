"""One module per model, each with its config dataclass (MultiVae-style layout).

Every model's ``forward(batch)`` returns ``ModelOutput(loss, metrics)``, where ``metrics`` holds
every term of the objective as a float, for logging.
"""
