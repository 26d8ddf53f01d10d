"""Real survey data in: readers of survey layouts and seed 000's preprocessing transform."""
