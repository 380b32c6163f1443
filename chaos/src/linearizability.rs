//! Linearizability of each key's history as a register (get, put, CAS).
