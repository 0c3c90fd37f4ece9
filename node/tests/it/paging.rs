//! Version vectors between nodes in pages: `Heads` replies page by author key, a listed `Pull`
//! names only the authors its caller lacks, so neither grows with every author a space had.

use bytes::Bytes;
use casesync_engine::model::ids::AuthorId;
use casesync_engine::model::limits::VECTOR_PAGE_AUTHORS_MAX;
use casesync_engine::model::vector_clock::VersionVector;
use casesync_proto::v1 as pb;
use tonic::Code;

use crate::support::*;

fn dot(author: &AuthorId, seq: u64) -> pb::Dot {
    pb::Dot { author: Bytes::copy_from_slice(author.as_bytes()), seq }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_come_in_pages_and_a_listed_pull_sends_only_the_authors_it_names() {
    let c = cluster(&["office", "home"]).await;
    let office = start(&c.dirs[0], vec![]).await;
    let home = start(&c.dirs[1], vec![office.sync_url()]).await;
    create(&office, case(1), "Anna").await;
    create(&home, case(2), "Ben").await;
    converge(&[&office, &home]).await;
    let (space, home_key) = (Bytes::copy_from_slice(office.shared().space.as_bytes()), identity(&c.dirs[1]).key);
    let vector = office.shared().store.vector(&office.shared().space);
    assert!(vector.len() >= 2, "the founder and home wrote");

    // Pages of one author: every author once, in key order, `more` until the last.
    let mut client = sync_client_as(&office, &home_key).await.unwrap();
    let (mut paged, mut after, mut pages) = (VersionVector::new(), Bytes::new(), 0);
    loop {
        let request = pb::HeadsRequest { space: space.clone(), after: after.clone(), limit: 1 };
        let reply = client.heads(request).await.unwrap().into_inner();
        let heads = reply.heads.unwrap_or_default().heads;
        assert_eq!(heads.len(), 1);
        assert!(heads[0].author > after || after.is_empty(), "pages move on in key order");
        after = heads[0].author.clone();
        paged.merge(&casesync_engine::codec::wire::vector_from_pb(&pb::VersionVector { heads }).unwrap());
        pages += 1;
        if !reply.more {
            break;
        }
    }
    assert_eq!((paged, pages), (vector.clone(), vector.len()));
    let bad = pb::HeadsRequest { space: space.clone(), after: Bytes::from_static(b"short"), limit: 0 };
    assert_eq!(client.heads(bad).await.unwrap_err().code(), Code::InvalidArgument);

    // A listed pull: only the author named, from the seq given; nothing when none is named.
    let office_author = office.shared().identity.author();
    let pulled = |have: Vec<pb::Dot>| {
        let (space, mut client) = (space.clone(), client.clone());
        async move {
            let request =
                pb::PullRequest { space, have: Some(pb::VersionVector { heads: have }), follow: false, listed: true };
            let mut stream = client.pull(request).await?.into_inner();
            let mut authors = Vec::new();
            while let Some(batch) = stream.message().await? {
                for event in batch.events {
                    let event = casesync_engine::model::event::SignedEvent::from_wire(event).unwrap();
                    authors.push((event.header.author, event.header.seq));
                }
            }
            Ok::<_, tonic::Status>(authors)
        }
    };
    let from_one = pulled(vec![dot(&office_author, 1)]).await.unwrap();
    let expected: Vec<(AuthorId, u64)> = (2..=vector.get(&office_author)).map(|seq| (office_author, seq)).collect();
    assert_eq!(from_one, expected);
    assert!(pulled(Vec::new()).await.unwrap().is_empty(), "every unnamed author is taken as held");
    let too_many: Vec<pb::Dot> = (0..=VECTOR_PAGE_AUTHORS_MAX as u32)
        .map(|n| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&n.to_be_bytes());
            dot(&AuthorId(key), 0)
        })
        .collect();
    assert_eq!(pulled(too_many).await.unwrap_err().code(), Code::InvalidArgument);

    // The nodes' own sessions, which page and list, still carry new writes both ways.
    set(&office, case(2), "phone", "030-1").await;
    set(&home, case(1), "phone", "040-2").await;
    converge(&[&office, &home]).await;
    home.shutdown().await;
    office.shutdown().await;
}
