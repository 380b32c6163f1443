//! Batch-system configuration.
//!
//! A plain struct (the crate has no serde): the embedding application maps its own
//! config file onto it. Every field says its default and its bounds; [`Config::validate`]
//! says exactly which one is out of bounds.

/// Upper bound for [`Config::pollers`]: more threads than this only add contention.
pub const MAX_POLLERS: usize = 256;

/// How the batch system polls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of poller threads.
    ///
    /// Default: the machine's available parallelism (1 if unknown). Bounds: 1 to
    /// [`MAX_POLLERS`].
    pub pollers: usize,
    /// Most FSMs one poller handles in one round; the handler's `end` sees at most this
    /// many. Bigger batches coalesce more work per round (one write, one fsync) at the
    /// price of latency for the first FSM of the round.
    ///
    /// Default: 256. Bounds: at least 1.
    pub max_batch_size: usize,
    /// Most messages one FSM is given per round. An FSM with more mail goes to the back
    /// of the poll queue, so one hot FSM cannot starve the others.
    ///
    /// Default: 4096. Bounds: at least 1.
    pub messages_per_tick: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pollers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_batch_size: 256,
            messages_per_tick: 4096,
        }
    }
}

/// A [`Config`] field out of its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid router config: `{field}` is {value}, but it must be {bound}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Its value.
    pub value: usize,
    /// What it must be.
    pub bound: &'static str,
}

impl Config {
    /// Checks every field against its bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, value, bound| {
            Err(ConfigError {
                field,
                value,
                bound,
            })
        };
        if self.pollers == 0 {
            return err("pollers", self.pollers, "at least 1");
        }
        if self.pollers > MAX_POLLERS {
            return err("pollers", self.pollers, "at most 256");
        }
        if self.max_batch_size == 0 {
            return err("max_batch_size", self.max_batch_size, "at least 1");
        }
        if self.messages_per_tick == 0 {
            return err("messages_per_tick", self.messages_per_tick, "at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        let cfg = Config::default();
        cfg.validate().unwrap();
        assert!(cfg.pollers >= 1);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                Config {
                    pollers: 0,
                    ..Config::default()
                },
                "`pollers` is 0, but it must be at least 1",
            ),
            (
                Config {
                    pollers: 1000,
                    ..Config::default()
                },
                "`pollers` is 1000, but it must be at most 256",
            ),
            (
                Config {
                    max_batch_size: 0,
                    ..Config::default()
                },
                "`max_batch_size` is 0",
            ),
            (
                Config {
                    messages_per_tick: 0,
                    ..Config::default()
                },
                "`messages_per_tick` is 0",
            ),
        ];
        for (cfg, want) in cases {
            let msg = cfg.validate().unwrap_err().to_string();
            assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        }
    }
}
