"""What the benchmark scripts share."""
import argparse

SYNTHETIC_SIZE = (100_000, 300)


def bounded_int(low: int, high: int):
    """An argparse type: an integer within low..high, so every loop a benchmark runs is bounded."""
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value
    return parse
