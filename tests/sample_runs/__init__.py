"""Tests of the sample scenarios, their scoring and the detection benchmark."""
