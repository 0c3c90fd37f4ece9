use super::*;
use crate::model::signing::DeviceKey;

fn key(n: u8) -> DeviceKey {
    DeviceKey::from_secret([n; 32])
}

const NONCE: [u8; 16] = [7; 16];

/// A space founded by device 1, with its `Found` at hlc 1.
fn space() -> (Membership, AuthorId) {
    let founder = key(1).author();
    let mut m = Membership::new(founded_space(&founder, &NONCE));
    m.add([record(&founder, 1, 1, MembershipOp::Found { nonce: NONCE, name: "office".into() })]);
    (m, founder)
}

fn record(author: &AuthorId, seq: u64, hlc: u64, op: MembershipOp) -> MembershipRecord {
    MembershipRecord { author: *author, seq, hlc: hlc << 16, op }
}

fn grant(device: &AuthorId, role: Role) -> MembershipOp {
    MembershipOp::Grant { device: *device, role, name: "d".into(), after: 0, until_ms: None }
}

#[test]
fn the_founder_is_proven_by_the_space_id_and_nobody_else_is_a_member() {
    let (m, founder) = space();
    assert_eq!(m.founder(), Some(founder));
    assert_eq!(m.judge(&founder, 2, 2 << 16, None), Ok(()));
    let stranger = key(9).author();
    assert!(matches!(m.judge(&stranger, 1, 2 << 16, None), Err(Refusal::NotMember(_))));
    // A `Found` by another key does not make the space.
    let fake = MembershipOp::Found { nonce: NONCE, name: "thief".into() };
    assert!(matches!(m.judge(&stranger, 1, 2 << 16, Some(&fake)), Err(Refusal::Invalid(_))));
    let mut other = m.clone();
    other.add([record(&stranger, 1, 0, fake)]);
    assert_eq!(other.founder(), Some(founder));
}

#[test]
fn roles_decide_what_counts() {
    let (mut m, founder) = space();
    let (writer, reader) = (key(2).author(), key(3).author());
    m.add([record(&founder, 2, 2, grant(&writer, Role::Writer)), record(&founder, 3, 3, grant(&reader, Role::Reader))]);
    assert_eq!(m.judge(&writer, 1, 4 << 16, None), Ok(()));
    assert!(matches!(m.judge(&reader, 1, 4 << 16, None), Err(Refusal::NotAllowed { role: Role::Reader, .. })));
    let revoke = MembershipOp::Revoke { device: reader, cut: 0 };
    assert!(matches!(m.judge(&writer, 2, 4 << 16, Some(&revoke)), Err(Refusal::NotAllowed { .. })));
    assert_eq!(m.judge(&founder, 4, 4 << 16, Some(&revoke)), Ok(()));
    // A writer's grant did not count: the founder's did.
    assert!(m.counts(&founder, 2) && m.counts(&founder, 3));
}

#[test]
fn a_revocation_cuts_at_what_the_revoker_had_seen_and_beats_a_re_grant() {
    let (mut m, founder) = space();
    let laptop = key(2).author();
    m.add([record(&founder, 2, 2, grant(&laptop, Role::Writer))]);
    m.add([record(&founder, 3, 10, MembershipOp::Revoke { device: laptop, cut: 5 })]);
    assert_eq!(m.judge(&laptop, 5, 20 << 16, None), Ok(()));
    assert!(matches!(m.judge(&laptop, 6, 3 << 16, None), Err(Refusal::Revoked { cut: 5, .. })));
    m.add([record(&founder, 4, 11, grant(&laptop, Role::Writer))]);
    assert!(m.judge(&laptop, 6, 12 << 16, None).is_err());
    assert!(!m.counts(&founder, 4));
}

#[test]
fn a_revoked_admin_cannot_backdate_a_grant_before_its_revocation() {
    let (mut m, founder) = space();
    let (admin, accomplice) = (key(2).author(), key(4).author());
    m.add([record(&founder, 2, 2, grant(&admin, Role::Admin))]);
    // The admin's seq 1 was seen by the founder; its seq 2, a grant stamped before the
    // revocation, was not.
    m.add([
        record(&admin, 1, 3, grant(&key(5).author(), Role::Reader)),
        record(&admin, 2, 4, grant(&accomplice, Role::Admin)),
        record(&founder, 3, 9, MembershipOp::Revoke { device: admin, cut: 1 }),
    ]);
    assert!(m.counts(&admin, 1));
    assert!(!m.counts(&admin, 2));
    assert!(m.judge(&accomplice, 1, 10 << 16, None).is_err());
}

#[test]
fn of_two_admins_revoking_each_other_concurrently_the_first_in_order_stands() {
    let (mut m, founder) = space();
    let (a, b) = (key(2).author(), key(3).author());
    m.add([record(&founder, 2, 2, grant(&a, Role::Admin)), record(&founder, 3, 3, grant(&b, Role::Admin))]);
    let records = [
        record(&a, 1, 10, MembershipOp::Revoke { device: b, cut: 0 }),
        record(&b, 1, 11, MembershipOp::Revoke { device: a, cut: 0 }),
    ];
    let mut forward = m.clone();
    forward.add(records.clone());
    let mut backward = m.clone();
    backward.add(records.into_iter().rev());
    for judged in [&forward, &backward] {
        assert!(judged.counts(&a, 1));
        assert!(!judged.counts(&b, 1));
        assert_eq!(judged.cut(&b), Some(0));
        assert_eq!(judged.cut(&a), None);
    }
}

#[test]
fn a_substitution_lasts_until_its_date() {
    let (mut m, founder) = space();
    let maria = key(2).author();
    let op =
        MembershipOp::Grant { device: maria, role: Role::Writer, name: "maria".into(), after: 0, until_ms: Some(100) };
    m.add([record(&founder, 2, 2, op)]);
    assert_eq!(m.judge(&maria, 1, 99 << 16, None), Ok(()));
    assert!(matches!(m.judge(&maria, 2, 100 << 16, None), Err(Refusal::Expired(_))));
    assert!(m.may_connect(&maria, 1, 150).is_err());
}

#[test]
fn an_invitation_enrols_one_device_once_before_it_expires() {
    let (mut m, founder) = space();
    let invitation = key(8);
    m.add([record(
        &founder,
        2,
        2,
        MembershipOp::Invite { key: invitation.author(), role: Role::Writer, expires_ms: 50, until_ms: None },
    )]);
    assert_eq!(m.open_invite(&invitation.author(), 10), Some(Role::Writer));
    let admit = |device: &AuthorId, signer: &DeviceKey| MembershipOp::Admit {
        invite: invitation.author(),
        proof: signer.sign(&admit_digest(m.space(), device)),
        name: "new".into(),
    };
    let (first, second) = (key(20).author(), key(21).author());
    // A proof by another key is no admission.
    assert!(m.judge(&first, 1, 10 << 16, Some(&admit(&first, &key(99)))).is_err());
    assert_eq!(m.judge(&first, 1, 10 << 16, Some(&admit(&first, &invitation))), Ok(()));
    let (a, b) = (admit(&first, &invitation), admit(&second, &invitation));
    m.add([record(&first, 1, 10, a)]);
    assert_eq!(m.judge(&first, 2, 11 << 16, None), Ok(()));
    assert_eq!(m.open_invite(&invitation.author(), 12), None);
    assert_eq!(m.invite_state(&invitation.author(), 12), InviteState::Used);
    assert_eq!(m.invite_state(&key(55).author(), 12), InviteState::Unknown);
    assert!(m.judge(&second, 1, 12 << 16, Some(&b)).is_err());
    // Expired: an admission stamped after the end does not count.
    let (mut late, _) = space();
    late.add([record(
        &founder,
        2,
        2,
        MembershipOp::Invite { key: invitation.author(), role: Role::Writer, expires_ms: 50, until_ms: None },
    )]);
    let op = MembershipOp::Admit {
        invite: invitation.author(),
        proof: invitation.sign(&admit_digest(late.space(), &second)),
        name: "late".into(),
    };
    assert!(late.judge(&second, 1, 60 << 16, Some(&op)).is_err());
    assert_eq!(late.invite_state(&invitation.author(), 60), InviteState::Expired);
    assert_eq!(late.invite_state(&invitation.author(), 10), InviteState::Open(Role::Writer));
}

#[test]
fn devices_list_roles_who_granted_and_revocations() {
    let (mut m, founder) = space();
    let (w, r) = (key(2).author(), key(3).author());
    m.add([
        record(&founder, 2, 2, grant(&w, Role::Writer)),
        record(&founder, 3, 3, grant(&r, Role::Reader)),
        record(&founder, 4, 4, MembershipOp::Revoke { device: r, cut: 0 }),
    ]);
    let devices = m.devices(10, &HashMap::new());
    assert_eq!(devices.len(), 3);
    assert!(devices[0].founder && devices[0].role == Some(Role::Admin));
    let writer = devices.iter().find(|d| d.device == w).unwrap();
    assert_eq!(writer.role, Some(Role::Writer));
    assert_eq!(writer.grant.as_ref().unwrap().by, founder);
    let reader = devices.iter().find(|d| d.device == r).unwrap();
    assert_eq!(reader.role, None);
    assert_eq!(reader.revoked.unwrap().cut, 0);
}

#[test]
fn a_verdict_span_never_covers_an_event_judged_otherwise() {
    let (mut m, founder) = space();
    let (w, x) = (key(2).author(), key(3).author());
    m.add([
        record(&founder, 2, 2, grant(&w, Role::Writer)),
        record(
            &founder,
            3,
            3,
            MembershipOp::Grant { device: w, role: Role::Reader, name: "w".into(), after: 6, until_ms: None },
        ),
        record(
            &founder,
            4,
            4,
            MembershipOp::Grant { device: w, role: Role::Writer, name: "w".into(), after: 9, until_ms: Some(50) },
        ),
        record(&founder, 5, 5, MembershipOp::Revoke { device: w, cut: 14 }),
        record(&founder, 6, 6, grant(&x, Role::Writer)),
        record(&founder, 7, 7, MembershipOp::Revoke { device: founder, cut: 30 }),
    ]);
    for author in [w, x, founder, key(9).author()] {
        for seq in 1..40u64 {
            for ms in [1u64, 49, 50, 80] {
                if m.judge(&author, seq, ms << 16, None).is_err() {
                    continue;
                }
                let (last, below) = m.case_verdict_span(&author, seq);
                for later in seq..=last.min(45) {
                    for later_ms in [ms, 49, 50, 80] {
                        let hlc = later_ms << 16;
                        if hlc >= ms << 16 && hlc < below {
                            assert!(
                                m.judge(&author, later, hlc, None).is_ok(),
                                "{author:?} {seq}@{ms} -> {later}@{later_ms}"
                            );
                        }
                    }
                }
            }
        }
    }
}
