//! Generic batch system: Fsm, Mailbox, Router, BatchSystem, PollHandler.
