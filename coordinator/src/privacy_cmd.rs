//! `tessera-coordinator privacy …`: placeholder until the privacy command lands.
