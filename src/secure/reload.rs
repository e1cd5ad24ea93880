//! One reload of one material of a node's security (the tokens file; the
//! node certificate, key and CA; the HTTPS pair) and what follows from its
//! outcome: fail closed where what is in force would grant more than the
//! newer files (a changed tokens file refuses every token; a changed CA
//! bundle trusts only the CAs it still holds), count it, log it within the
//! limit [`super::retry::Reloader`] decided, and publish the failure state
//! for `ringkv_reload_failing` and `GET /v1/cluster`.

use super::retry::{Failing, Report};
use super::{HttpsCert, NodeSecurity, WATCH_INTERVAL};
use ringkv_actors::metrics::{Metrics, ReloadFailure, Reloadable};
use std::path::PathBuf;

impl NodeSecurity {
    /// The files of a material, in the order of its stamps.
    pub(super) fn files_of(&self, what: Reloadable) -> Vec<PathBuf> {
        match what {
            Reloadable::Tls => self.tls.as_ref().map_or(Vec::new(), |t| {
                let f = t.files();
                vec![f.ca.clone(), f.cert.clone(), f.key.clone()]
            }),
            Reloadable::Https => match &self.https {
                Some(HttpsCert::Own(own)) => own.files().to_vec(),
                _ => Vec::new(),
            },
            Reloadable::Tokens => self.auth.iter().map(|a| a.file.clone()).collect(),
        }
    }

    /// What the material is called in the log.
    fn name(what: Reloadable) -> &'static str {
        match what {
            Reloadable::Tls => "the node certificate and CA",
            Reloadable::Https => "the HTTPS certificate",
            Reloadable::Tokens => "the tokens file",
        }
    }

    /// Reads one material again (it is swapped in only if it passes).
    pub(super) fn reload_one(&self, what: Reloadable) -> Result<String, String> {
        match what {
            Reloadable::Tls => match &self.tls {
                Some(tls) => tls
                    .reload()
                    .map(|_| String::new())
                    .map_err(|e| e.to_string()),
                None => Ok(String::new()),
            },
            Reloadable::Https => match &self.https {
                Some(HttpsCert::Own(own)) => own
                    .reload()
                    .map(|_| String::new())
                    .map_err(|e| e.to_string()),
                _ => Ok(String::new()),
            },
            Reloadable::Tokens => match &self.auth {
                Some(auth) => auth.reload().map(|n| format!(" ({n} in force)")),
                None => Ok(String::new()),
            },
        }
    }

    /// Fails closed after a failed reload; answers what is in force now.
    fn after_failure(&self, what: Reloadable, stale: bool, changed: &[bool]) -> String {
        match what {
            Reloadable::Tokens if stale => {
                if let Some(auth) = &self.auth {
                    auth.refuse_all();
                }
                "refusing every token (503 tokens_unavailable) until it loads, since it may \
                 revoke one"
                    .into()
            }
            // Refused since the file last looked changed: a load lifts it.
            Reloadable::Tokens if self.auth.as_ref().is_some_and(|a| !a.is_available()) => {
                "still refusing every token (503 tokens_unavailable) until it loads".into()
            }
            Reloadable::Tokens => "keeping the tokens in force (the file did not change)".into(),
            // The CA bundle is the first file of the node's material.
            Reloadable::Tls if changed.first() == Some(&true) => match &self.tls {
                Some(tls) => {
                    let left = tls.restrict_to_ca_file();
                    format!(
                        "trusting only the CAs in force that the new CA file still holds ({} \
                         of {}), keeping the certificate in force",
                        left.trusted, left.of
                    )
                }
                None => "keeping the one in force".into(),
            },
            Reloadable::Tls | Reloadable::Https => "keeping the one in force".into(),
        }
    }

    /// Logs, counts and publishes the outcome of a reload of `what`.
    pub(super) fn report(
        &self,
        what: Reloadable,
        why: &str,
        result: &Result<String, String>,
        report: &Report,
        failing: Option<&Failing>,
        metrics: &Metrics,
    ) {
        let name = Self::name(what);
        let (ok_counter, failed_counter) = match what {
            Reloadable::Tokens => (&metrics.tokens_reloads, &metrics.tokens_reload_failures),
            Reloadable::Tls | Reloadable::Https => {
                (&metrics.tls_reloads, &metrics.tls_reload_failures)
            }
        };
        match (report, result) {
            (Report::Loaded { after_failures }, Ok(detail)) => {
                Metrics::add(ok_counter, 1);
                if *after_failures > 0 {
                    log::info!(
                        "{why}: reloaded {name}{detail} after {after_failures} failed attempts"
                    );
                } else {
                    log::info!("{why}: reloaded {name}{detail}");
                }
            }
            (
                Report::Failed {
                    stale,
                    changed,
                    log,
                    ..
                },
                Err(e),
            ) => {
                Metrics::add(failed_counter, 1);
                let in_force = self.after_failure(what, *stale, changed);
                match log {
                    Some(0) => log::error!(
                        "{why}: cannot reload {name}, {in_force}: {e} (retrying every \
                         {}s)",
                        WATCH_INTERVAL.as_secs()
                    ),
                    Some(n) => log::error!(
                        "{why}: still cannot reload {name} ({n} more failed attempts since \
                         the last report), {in_force}: {e}"
                    ),
                    None => {}
                }
            }
            _ => {}
        }
        metrics.reloads.set(
            what,
            failing.map(|f| ReloadFailure {
                since_unix_ms: f.since_unix_ms,
                attempts: f.attempts,
                last_error: f.last_error.clone(),
            }),
        );
    }
}
