//! Built-in actions, for machines with no container runtime.
