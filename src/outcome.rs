//! How a request or a notification ended, as types. One place turns them into the `outcome`
//! label of `payguard_requests_total` / `payguard_notifications_total` and the `outcome` field of
//! the access and notification logs ([`RequestOutcome::as_str`], [`NotifyOutcome::as_str`]), and
//! [`RequestOutcome::ALL`] / [`NotifyOutcome::ALL`] / [`EgressOutcome::ALL`] are the lists docs/operations.md documents
//! (a test keeps them in step). A leaf module: channels, notify and proxy all use it.

macro_rules! outcomes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every outcome, in documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The metric label and log field value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

outcomes! {
    /// How a request through the proxy ended (`payguard_requests_total{outcome}`).
    RequestOutcome {
        /// Forwarded to the backend and answered.
        #[default]
        Proxied = "proxied",
        /// Refused by the guard or by request canonicalization.
        Rejected = "rejected",
        /// A notify route; its result is a [`NotifyOutcome`].
        Notification = "notification",
        /// An egress route; its result is an [`EgressOutcome`].
        Egress = "egress",
        /// No route matched and the default action is `not_found`.
        NotFound = "not_found",
        /// The backend could not be reached or broke the exchange.
        UpstreamError = "upstream_error",
        /// The backend did not answer in time.
        UpstreamTimeout = "upstream_timeout",
        /// The client went away before the answer.
        ClientClosed = "client_closed",
        /// The client's body stalled or came too slowly (408).
        ClientTimeout = "client_timeout",
        /// A request Pingora could not parse.
        BadRequest = "bad_request",
        /// The route needs something the running config lacks.
        Misconfigured = "misconfigured",
        /// Anything else that failed inside payguard.
        Error = "error",
    }
}

outcomes! {
    /// How a payment notification ended (`payguard_notifications_total{outcome}`).
    NotifyOutcome {
        /// Verified, claimed, forwarded and accepted by the backend.
        #[default]
        Forwarded = "forwarded",
        /// Already delivered: acked without reaching the backend.
        Duplicate = "duplicate",
        /// Another delivery of the same event is being forwarded right now.
        InFlight = "in_flight",
        /// A pending event after the final one was delivered or claimed: acked and dropped.
        LatePending = "late_pending",
        /// The signature does not verify, or uses a scheme this route does not accept.
        RejectedSignature = "rejected_signature",
        /// Outside the channel's timestamp window.
        RejectedStale = "rejected_stale",
        /// Merchant or app id is not the configured one.
        RejectedBusiness = "rejected_business",
        /// Signed with a key or certificate payguard does not know.
        RejectedUnknownKey = "rejected_unknown_key",
        /// The body is not what the channel sends.
        RejectedMalformed = "rejected_malformed",
        /// The encrypted resource does not decrypt.
        RejectedDecrypt = "rejected_decrypt",
        /// An amount no real payment or refund has.
        RejectedAmount = "rejected_amount",
        /// A method other than the channel's (POST).
        RejectedMethod = "rejected_method",
        /// The backend did not accept the event (or did not answer in time).
        BackendError = "backend_error",
        /// The dedup record could not be read or written.
        StoreError = "store_error",
        /// The body is over the route's limit.
        BodyTooLarge = "body_too_large",
        /// The body stalled or came too slowly (408).
        ClientTimeout = "client_timeout",
    }
}

outcomes! {
    /// How an egress call to a payment channel ended (`payguard_egress_requests_total{outcome}`).
    EgressOutcome {
        /// Signed, sent, and the channel's answer verified and relayed.
        #[default]
        Relayed = "relayed",
        /// Method or channel path not on the route's allow-list; nothing sent (403).
        RefusedNotAllowed = "refused_not_allowed",
        /// The backend's request cannot be made into a channel call; nothing sent (400).
        RefusedBadRequest = "refused_bad_request",
        /// The backend's body is over the route's limit; nothing sent (413).
        RefusedTooLarge = "refused_too_large",
        /// The request could not be signed; nothing sent (500).
        SigningFailed = "signing_failed",
        /// The channel's answer does not verify; nothing relayed (502).
        AnswerUnverified = "answer_unverified",
        /// The channel's answer body is over the route's limit; nothing relayed (502).
        AnswerTooLarge = "answer_too_large",
        /// The channel could not be reached or broke off the exchange (502).
        ChannelUnreachable = "channel_unreachable",
        /// The channel did not answer in time (504).
        ChannelTimeout = "channel_timeout",
        /// The backend's body stalled or came too slowly (408).
        ClientTimeout = "client_timeout",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backticked outcome labels docs/operations.md lists in the metric's row, after `after`.
    fn documented(metric: &str, after: &str) -> Vec<String> {
        let doc = include_str!("../docs/operations.md");
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{metric}`")))
            .unwrap_or_else(|| panic!("docs/operations.md has no row for {metric}"));
        let description = row.split('|').nth(3).unwrap_or_default();
        let listed = description.split_once(after).map(|(_, rest)| rest).unwrap_or_default();
        listed
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| !t.starts_with("payguard_"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_operations_page_lists_exactly_the_request_outcomes() {
        let mut doc = documented("payguard_requests_total", "`outcome` is");
        let mut code: Vec<_> = RequestOutcome::ALL.iter().map(|o| o.as_str().to_string()).collect();
        doc.sort();
        code.sort();
        assert_eq!(doc, code);
    }

    #[test]
    fn the_operations_page_lists_exactly_the_notification_outcomes() {
        let mut doc = documented("payguard_notifications_total", "notifications:");
        let mut code: Vec<_> = NotifyOutcome::ALL.iter().map(|o| o.as_str().to_string()).collect();
        doc.sort();
        code.sort();
        assert_eq!(doc, code);
    }

    #[test]
    fn the_operations_page_lists_exactly_the_egress_outcomes() {
        let mut doc = documented("payguard_egress_requests_total", "calls:");
        let mut code: Vec<_> = EgressOutcome::ALL.iter().map(|o| o.as_str().to_string()).collect();
        doc.sort();
        code.sort();
        assert_eq!(doc, code);
    }

    #[test]
    fn labels_are_unique_snake_case() {
        let requests = RequestOutcome::ALL.iter().map(|o| o.as_str());
        let notifications = NotifyOutcome::ALL.iter().map(|o| o.as_str());
        let egress = EgressOutcome::ALL.iter().map(|o| o.as_str());
        for all in [requests.collect::<Vec<_>>(), notifications.collect(), egress.collect()] {
            let mut seen = std::collections::HashSet::new();
            for l in &all {
                assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{l}");
                assert!(seen.insert(*l), "{l} twice");
            }
        }
    }
}
