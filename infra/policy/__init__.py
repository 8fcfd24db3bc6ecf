"""The stack's policy pack (`pulumi preview --policy-pack infra/policy`); rules in `validators`."""
