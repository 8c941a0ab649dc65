"""Energy measurement: the meter, one sensor class per power source, carbon intensity and the
machine's description. Knows nothing of models, suites or the store."""
