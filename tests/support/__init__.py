"""Helpers the tests share (Kafka I/O, an exact MILP): test modules import from here, never
from one another."""
