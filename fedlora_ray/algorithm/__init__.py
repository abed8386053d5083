"""The federated round: plan -> local updates (through a Backend) -> aggregate -> log."""
