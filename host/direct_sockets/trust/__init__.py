"""Who may reach what: destinations, the policy, the permission store, consent, and the decision core (no I/O)."""
