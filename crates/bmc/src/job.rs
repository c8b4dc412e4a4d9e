//! Jobs: ordered BMC operations with per-step state, stopping at the first
//! failure. The executor only talks to the [`Bmc`] trait, so it is tested
//! with a scripted fake and paused time, and runs unchanged on any backend.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Bmc;
use crate::error::BmcError;
use crate::types::{BootDevice, BootOverride, PowerAction, PowerState};

pub use bellows_model::bmc::{Operation, Step, StepState};

/// The overall state of a job, derived from its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// No step started yet.
    Pending,
    /// Some steps done, none failed, some left.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed; later ones were skipped.
    Failed,
}

/// How long and how often to poll the power state after a change: BMCs and
/// emulators apply power changes seconds after acknowledging them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    /// Pause between two reads.
    pub interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(90),
        }
    }
}

/// An ordered list of operations run against one BMC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Job {
    /// A job of pending steps.
    pub fn new(operations: impl IntoIterator<Item = Operation>) -> Job {
        Job {
            steps: operations
                .into_iter()
                .map(|operation| Step {
                    operation,
                    state: StepState::Pending,
                    error: None,
                })
                .collect(),
        }
    }

    /// Reinstall by network: power off (hard), next boot PXE once, power on.
    pub fn netboot(efi: bool) -> Job {
        Job::new([
            Operation::Power {
                action: PowerAction::Off,
            },
            Operation::SetBootDevice {
                device: BootDevice::Pxe,
                options: BootOverride {
                    efi,
                    persistent: false,
                },
            },
            Operation::Power {
                action: PowerAction::On,
            },
        ])
    }

    /// The job's state, derived from its steps.
    pub fn state(&self) -> JobState {
        if self
            .steps
            .iter()
            .any(|step| step.state == StepState::Failed)
        {
            JobState::Failed
        } else if self
            .steps
            .iter()
            .all(|step| step.state == StepState::Succeeded)
        {
            JobState::Succeeded
        } else if self
            .steps
            .iter()
            .all(|step| step.state == StepState::Pending)
        {
            JobState::Pending
        } else {
            JobState::Running
        }
    }

    /// Runs the pending steps in order, stopping at the first failure (later
    /// steps become `Skipped`). Returns that failure.
    pub async fn run(&mut self, bmc: &impl Bmc, policy: PollPolicy) -> Result<(), BmcError> {
        self.run_observed(bmc, policy, |_| {}).await
    }

    /// Like [`Job::run`], calling `observe` after every state change so the
    /// caller can persist progress or emit events.
    pub async fn run_observed(
        &mut self,
        bmc: &impl Bmc,
        policy: PollPolicy,
        mut observe: impl FnMut(&Job),
    ) -> Result<(), BmcError> {
        for index in 0..self.steps.len() {
            if self.steps[index].state != StepState::Pending {
                continue;
            }
            self.steps[index].state = StepState::Running;
            observe(self);
            let operation = self.steps[index].operation.clone();
            let outcome = execute(bmc, &operation, policy).await;
            match outcome {
                Ok(()) => {
                    self.steps[index].state = StepState::Succeeded;
                    observe(self);
                }
                Err(error) => {
                    tracing::warn!(step = %operation, %error, "BMC job step failed");
                    self.steps[index].state = StepState::Failed;
                    self.steps[index].error = Some(error.to_string());
                    for later in &mut self.steps[index + 1..] {
                        if later.state == StepState::Pending {
                            later.state = StepState::Skipped;
                        }
                    }
                    observe(self);
                    return Err(error);
                }
            }
        }
        Ok(())
    }
}

/// Performs one operation, waiting for power changes to land.
pub async fn execute(
    bmc: &impl Bmc,
    operation: &Operation,
    policy: PollPolicy,
) -> Result<(), BmcError> {
    match operation {
        Operation::Power { action } => {
            bmc.power(*action).await?;
            wait_for_power(bmc, action.expected_state(), policy)
                .await
                .map(drop)
        }
        Operation::SetBootDevice { device, options } => {
            bmc.set_boot_device(*device, *options).await
        }
        Operation::InsertVirtualMedia { image_url } => bmc.insert_virtual_media(image_url).await,
        Operation::EjectVirtualMedia => bmc.eject_virtual_media().await,
    }
}

/// Polls the power state until it is `wanted` or the policy's timeout runs
/// out. Read errors while polling are tolerated (BMCs are often busy during
/// a power change); the last one is returned if the state never matches.
pub async fn wait_for_power(
    bmc: &impl Bmc,
    wanted: PowerState,
    policy: PollPolicy,
) -> Result<PowerState, BmcError> {
    let started = tokio::time::Instant::now();
    let mut last_state = PowerState::Unknown;
    loop {
        let last_error = match bmc.power_status().await {
            Ok(state) if state == wanted => return Ok(state),
            Ok(state) => {
                last_state = state;
                None
            }
            Err(error) => {
                tracing::debug!(%error, "power status read failed while polling");
                Some(error)
            }
        };
        if started.elapsed() + policy.interval > policy.timeout {
            return Err(last_error.unwrap_or(BmcError::PowerStateNotReached {
                wanted,
                last: last_state,
                after: started.elapsed(),
            }));
        }
        tokio::time::sleep(policy.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A BMC whose power lands `lag` status reads after a change, and which
    /// fails the operations named in `failing`.
    #[derive(Default)]
    struct FakeBmc {
        state: Mutex<FakeState>,
        lag: u32,
        failing: Vec<&'static str>,
    }

    #[derive(Default)]
    struct FakeState {
        power: Option<PowerState>,
        pending: Option<(PowerState, u32)>,
        boot: Option<(BootDevice, BootOverride)>,
        calls: Vec<String>,
    }

    impl FakeBmc {
        fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
        fn fail(&self, name: &str) -> Result<(), BmcError> {
            if self.failing.contains(&name) {
                return Err(BmcError::Protocol {
                    address: "fake".into(),
                    operation: name.into(),
                    detail: "scripted failure".into(),
                });
            }
            Ok(())
        }
    }

    impl Bmc for FakeBmc {
        async fn power_status(&self) -> Result<PowerState, BmcError> {
            let mut state = self.lock();
            state.calls.push("status".into());
            if let Some((target, remaining)) = state.pending {
                if remaining == 0 {
                    state.power = Some(target);
                    state.pending = None;
                } else {
                    state.pending = Some((target, remaining - 1));
                }
            }
            Ok(state.power.unwrap_or(PowerState::Off))
        }
        async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
            self.fail("power")?;
            let mut state = self.lock();
            state.calls.push(format!("power {action}"));
            state.pending = Some((action.expected_state(), self.lag));
            Ok(())
        }
        async fn set_boot_device(
            &self,
            device: BootDevice,
            options: BootOverride,
        ) -> Result<(), BmcError> {
            self.fail("boot")?;
            let mut state = self.lock();
            state.calls.push(format!("boot {device}"));
            state.boot = Some((device, options));
            Ok(())
        }
        async fn insert_virtual_media(&self, _image_url: &str) -> Result<(), BmcError> {
            Err(BmcError::Unsupported {
                address: "fake".into(),
                operation: "insert virtual media".into(),
                detail: "no".into(),
            })
        }
        async fn eject_virtual_media(&self) -> Result<(), BmcError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn netboot_runs_in_order_and_waits_for_power() {
        let bmc = FakeBmc {
            lag: 3,
            ..FakeBmc::default()
        };
        bmc.lock().power = Some(PowerState::On);
        let mut job = Job::netboot(true);
        let mut seen = Vec::new();
        job.run_observed(&bmc, PollPolicy::default(), |job| seen.push(job.state()))
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(job.state(), JobState::Succeeded);
        assert_eq!(seen.first(), Some(&JobState::Running));
        let state = bmc.lock();
        assert_eq!(state.power, Some(PowerState::On));
        assert_eq!(
            state.boot,
            Some((
                BootDevice::Pxe,
                BootOverride {
                    efi: true,
                    persistent: false
                }
            ))
        );
        let order: Vec<&str> = state
            .calls
            .iter()
            .map(String::as_str)
            .filter(|call| *call != "status")
            .collect();
        assert_eq!(order, ["power off", "boot pxe", "power on"]);
    }

    #[tokio::test(start_paused = true)]
    async fn first_failure_stops_the_job() {
        let bmc = FakeBmc {
            failing: vec!["boot"],
            ..FakeBmc::default()
        };
        let mut job = Job::netboot(false);
        let result = job.run(&bmc, PollPolicy::default()).await;
        assert!(matches!(result, Err(BmcError::Protocol { .. })));
        assert_eq!(job.state(), JobState::Failed);
        let states: Vec<StepState> = job.steps.iter().map(|step| step.state).collect();
        assert_eq!(
            states,
            [StepState::Succeeded, StepState::Failed, StepState::Skipped]
        );
        assert!(
            job.steps[1]
                .error
                .as_deref()
                .is_some_and(|error| error.contains("scripted failure"))
        );
        assert!(!bmc.lock().calls.iter().any(|call| call == "power on"));
    }

    #[tokio::test(start_paused = true)]
    async fn polling_gives_up_at_the_timeout() {
        let bmc = FakeBmc {
            lag: 1_000,
            ..FakeBmc::default()
        };
        let policy = PollPolicy {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        };
        let started = tokio::time::Instant::now();
        let result = execute(
            &bmc,
            &Operation::Power {
                action: PowerAction::On,
            },
            policy,
        )
        .await;
        assert!(matches!(
            result,
            Err(BmcError::PowerStateNotReached {
                wanted: PowerState::On,
                last: PowerState::Off,
                ..
            })
        ));
        assert!(started.elapsed() <= Duration::from_secs(10));
    }

    #[test]
    fn jobs_serialize_for_storage() {
        let job = Job::netboot(true);
        let text = serde_json::to_string(&job).unwrap_or_else(|error| panic!("{error}"));
        assert!(text.contains(r#""op":"set_boot_device""#), "{text}");
        let back: Job = serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(back, job);
        assert_eq!(job.state(), JobState::Pending);
    }
}
