"""What a valid ImagePullSecret is: its API constants, rules, validation and selectors (pure)."""
