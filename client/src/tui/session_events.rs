//! What the app hears of a voice session: each [`SessionEvent`] as the [`Event`]s it means
//! for the screen. Pure, so the mapping is tested without a session.

use crate::session::SessionEvent;
use crate::tui::action::Event;
use crate::tui::model::ReceiveQuality;

/// Translates one session event into what the app needs to know.
pub fn events_for(ev: SessionEvent, me: u64) -> Vec<Event> {
    match ev {
        // Admitted: our voice address is bound, so the server now lists us as a member
        // (CHANNEL_INFO lists bound members only; the join's listing came before it).
        SessionEvent::Admitted { rtt_ms } => vec![
            Event::Link {
                rtt_ms: Some(rtt_ms.round() as u32),
                loss_pct: None,
            },
            Event::PeerJoined {
                uid: me,
                name: String::new(),
            },
        ],
        // The adapter fills in the name.
        SessionEvent::PeerJoined { uid } => vec![Event::PeerJoined {
            uid,
            name: String::new(),
        }],
        SessionEvent::PeerLeft { uid } => vec![Event::PeerLeft(uid)],
        SessionEvent::TalkingStarted { uid } if uid != me => {
            vec![Event::Talking { uid, talking: true }]
        }
        SessionEvent::TalkingStopped { uid } if uid != me => vec![Event::Talking {
            uid,
            talking: false,
        }],
        SessionEvent::Stats(s) => {
            let mut out = Vec::with_capacity(s.peers.len() + 1);
            let (mut lost, mut expected) = (0u64, 0u64);
            for p in &s.peers {
                let recovered = p.recovered_redundancy + p.recovered_fec;
                let exp = p.received + p.lost;
                lost += p.lost;
                expected += exp;
                out.push(Event::PeerStats {
                    uid: p.uid,
                    stats: ReceiveQuality {
                        received: p.received,
                        lost: p.concealed,
                        recovered,
                        loss_pct: percent(p.lost, exp),
                        jitter_ms: p.jitter_ms,
                        buffer_ms: p.buffer_ms,
                    },
                });
            }
            out.push(Event::Link {
                rtt_ms: s.link.srtt_ms.or(s.link.rtt_ms).map(|r| r.round() as u32),
                loss_pct: (expected > 0).then(|| percent(lost, expected)),
            });
            out
        }
        SessionEvent::Kicked => vec![Event::Left {
            reason: "you were removed from the channel".into(),
            rejoin: false,
        }],
        SessionEvent::Shutdown => vec![Event::Left {
            reason: "the server closed the channel".into(),
            rejoin: true,
        }],
        SessionEvent::Failed { reason } => vec![Event::Left {
            reason: format!("voice stopped: {reason}"),
            rejoin: false,
        }],
        SessionEvent::Epoch {
            epoch,
            safety_code,
            members,
        } => vec![Event::Epoch {
            epoch,
            safety_code,
            members: members.len(),
        }],
        SessionEvent::Message { seq, sender, text } => {
            vec![Event::ChatMessage { seq, sender, text }]
        }
        SessionEvent::KeyChanged { uid } => vec![Event::KeyChanged(uid)],
        SessionEvent::ChatRefused { text } => vec![Event::ChatRefused(text)],
        _ => vec![],
    }
}

fn percent(part: u64, whole: u64) -> f32 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / whole as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::PeerStats;
    use crate::session::SessionStats;

    #[test]
    fn talking_of_others_only_and_session_ends() {
        let me = 1;
        assert_eq!(
            events_for(SessionEvent::TalkingStarted { uid: 2 }, me),
            vec![Event::Talking {
                uid: 2,
                talking: true
            }]
        );
        // Our own talking shows through the meter, not the member list.
        assert!(events_for(SessionEvent::TalkingStarted { uid: me }, me).is_empty());
        assert_eq!(
            events_for(SessionEvent::Shutdown, me),
            vec![Event::Left {
                reason: "the server closed the channel".into(),
                rejoin: true
            }]
        );
        assert!(matches!(
            events_for(SessionEvent::Kicked, me)[0],
            Event::Left { rejoin: false, .. }
        ));
    }

    #[test]
    fn epochs_chat_and_key_changes_reach_the_app() {
        assert_eq!(
            events_for(
                SessionEvent::Epoch {
                    epoch: 3,
                    safety_code: "12345 67890".into(),
                    members: vec![1, 2, 3],
                },
                1
            ),
            vec![Event::Epoch {
                epoch: 3,
                safety_code: "12345 67890".into(),
                members: 3
            }]
        );
        assert_eq!(
            events_for(
                SessionEvent::Message {
                    seq: 7,
                    sender: 2,
                    text: "hi".into()
                },
                1
            ),
            vec![Event::ChatMessage {
                seq: 7,
                sender: 2,
                text: "hi".into()
            }]
        );
        assert_eq!(
            events_for(SessionEvent::KeyChanged { uid: 2 }, 1),
            vec![Event::KeyChanged(2)]
        );
        assert_eq!(
            events_for(SessionEvent::ChatRefused { text: "x".into() }, 1),
            vec![Event::ChatRefused("x".into())]
        );
    }

    #[test]
    fn stats_become_per_peer_quality_and_overall_loss() {
        let mut s = SessionStats::default();
        s.link.srtt_ms = Some(3.4);
        s.peers = vec![
            PeerStats {
                uid: 2,
                received: 90,
                lost: 10,
                recovered_redundancy: 6,
                recovered_fec: 2,
                concealed: 2,
                jitter_ms: 4.0,
                buffer_ms: 40.0,
                ..PeerStats::default()
            },
            PeerStats {
                uid: 3,
                received: 100,
                ..PeerStats::default()
            },
        ];
        let a = events_for(SessionEvent::Stats(Box::new(s)), 1);
        assert_eq!(
            a[0],
            Event::PeerStats {
                uid: 2,
                stats: ReceiveQuality {
                    received: 90,
                    lost: 2,
                    recovered: 8,
                    loss_pct: 10.0,
                    jitter_ms: 4.0,
                    buffer_ms: 40.0,
                }
            }
        );
        assert_eq!(
            a[2],
            Event::Link {
                rtt_ms: Some(3),
                loss_pct: Some(5.0)
            }
        );
    }
}
