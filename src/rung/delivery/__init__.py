"""Progressive delivery: rollouts, their statistics and the controller."""
