//! The intersection attack (issue 13): storage and the proxy together, given everything
//! they record while users come and go, rank the candidates for a recipient's
//! correspondent; and the same attack given only the ideal leakage (each client's online
//! rounds, nothing else).
//!
//! The attack is generic: per client and round it reduces what the operators saw to a
//! signature (the direction, kind, size and epoch within the round of every frame of the
//! client's connections at the proxy), marks the rounds
//! whose signature is not the client's usual one, and scores each candidate by how its
//! presence and its unusual rounds go with the recipient's unusual rounds (in absolute
//! covariance), plus how differently it looks in the episode than outside it (the total
//! variation distance between its signatures in and out). Under the ideal leakage a
//! recipient who stays online never looks unusual, a client online looks the same in every
//! round, and every score is the same.
//!
//! The test ([`rank_test`]) runs episodes, each with a sender drawn among candidates whose
//! comings and goings are drawn alike: whatever the operators see that does not depend on
//! who sends leaves the true sender's rank uniform among them. The statistic is the sum of
//! the true senders' ranks; its p-value is the chance that senders drawn at random rank as
//! high, by Monte Carlo over the same scores. The removed inbox delivery is modelled by
//! [`inbox_model`]: storage saw which inbox got a deposit in each round.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, RngExt};
use shroud_proto::proxy::ClientMsg;
use shroud_proto::{Limits, Shape};
use shroud_proxy::transcript::{FrameKind, Transcript as ProxyTranscript};

/// One frame as the attack keys it: from the client, kind, bytes, epoch within the round.
type Seen = (bool, FrameKind, u64, u64);

/// What the operators observed: per client, per round, `None` when it was offline, or a
/// signature of everything seen of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `rounds[client][round]`.
    pub rounds: Vec<Vec<Option<u64>>>,
}

impl Observed {
    /// From a run's transcript at the proxy (with frames kept): clients are the stores in
    /// `stores` (hex ids, as storage names them), each joined over all its connections by
    /// the store its connection registered; rounds are the shape's, from round 0 to the
    /// last one anybody was seen in.
    ///
    /// Storage adds nothing per client here: each of its round requests holds every online
    /// client's outbox write and queries, one each, of fixed sizes, every write naming its
    /// writer's own outbox (the audit's collusion view checks all of that), so what it sees
    /// of a round is the number of clients online, which the proxy sees too.
    pub fn from_transcript(proxy: &Path, shape: &Shape, stores: &[String]) -> Result<Self> {
        let round_epochs = u64::from(shape.round_epochs.max(1));
        let entries = ProxyTranscript::read(proxy)?;
        // Which client each connection is: the store it registered.
        let mut owner: HashMap<u64, usize> = HashMap::new();
        for e in &entries {
            if e.kind != FrameKind::Register || !e.inbound {
                continue;
            }
            let hex = e.frame.as_ref().context("the proxy did not keep frames")?;
            let bytes = data_encoding::HEXLOWER.decode(hex.as_bytes())?;
            if let Ok(ClientMsg::Register(grant, _)) =
                shroud_proto::decode(&bytes, Limits::default())
                && let Some(i) = stores.iter().position(|s| *s == grant.store.to_string())
            {
                owner.insert(e.conn, i);
            }
        }
        let mut seen: BTreeMap<(usize, u64), Vec<Seen>> = BTreeMap::new();
        let mut last = 0;
        for e in &entries {
            let Some(&c) = owner.get(&e.conn) else {
                continue;
            };
            let round = e.epoch / round_epochs;
            last = last.max(round);
            seen.entry((c, round)).or_default().push((
                e.inbound,
                e.kind,
                e.bytes,
                e.epoch % round_epochs,
            ));
        }
        let rounds = (0..stores.len())
            .map(|c| {
                (0..=last)
                    .map(|r| {
                        let frames = seen.get(&(c, r))?;
                        // Online: it sent something in the round.
                        if !frames.iter().any(|f| f.0) {
                            return None;
                        }
                        let mut sorted = frames.clone();
                        sorted.sort();
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        sorted.hash(&mut h);
                        Some(h.finish())
                    })
                    .collect()
            })
            .collect();
        Ok(Observed { rounds })
    }

    /// Only the ideal leakage: which rounds each client was online in.
    pub fn ideal(&self) -> Observed {
        Observed {
            rounds: self
                .rounds
                .iter()
                .map(|c| c.iter().map(|r| r.map(|_| 0)).collect())
                .collect(),
        }
    }

    /// Rounds observed.
    pub fn len(&self) -> usize {
        self.rounds.first().map_or(0, Vec::len)
    }

    /// True when no round was observed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn online(&self, c: usize, r: usize) -> f64 {
        f64::from(u8::from(self.rounds[c][r].is_some()))
    }

    /// How differently `c` looked in `rounds` than in the other rounds: the total variation
    /// distance between its signatures' frequencies in and out of them (online rounds only;
    /// 0 when either side has none).
    fn apart(&self, c: usize, rounds: &Range<usize>) -> f64 {
        let mut inside: HashMap<u64, f64> = HashMap::new();
        let mut outside: HashMap<u64, f64> = HashMap::new();
        for (r, s) in self.rounds[c].iter().enumerate() {
            if let Some(s) = s {
                let side = if rounds.contains(&r) {
                    &mut inside
                } else {
                    &mut outside
                };
                *side.entry(*s).or_default() += 1.0;
            }
        }
        let (ni, no) = (inside.values().sum::<f64>(), outside.values().sum::<f64>());
        if ni == 0.0 || no == 0.0 {
            return 0.0;
        }
        let keys: BTreeSet<u64> = inside.keys().chain(outside.keys()).copied().collect();
        keys.iter()
            .map(|k| {
                let a = inside.get(k).copied().unwrap_or(0.0) / ni;
                let b = outside.get(k).copied().unwrap_or(0.0) / no;
                (a - b).abs()
            })
            .sum::<f64>()
            / 2.0
    }

    /// 1 in the rounds where `c` was online and its signature was not its most common one.
    fn unusual(&self, c: usize) -> Vec<f64> {
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for s in self.rounds[c].iter().flatten() {
            *counts.entry(*s).or_default() += 1;
        }
        let usual = counts
            .into_iter()
            .max_by_key(|&(s, n)| (n, s))
            .map(|(s, _)| s);
        self.rounds[c]
            .iter()
            .map(|s| f64::from(u8::from(s.is_some() && *s != usual)))
            .collect()
    }
}

/// The removed inbox delivery's leak, modelled: the ideal leakage, plus whether
/// `recipient`'s inbox got a deposit in each round (there was one in each round its sender,
/// `senders[round]`, was online: a sender with mail queued deposits a chunk a round).
pub fn inbox_model(observed: &Observed, recipient: usize, senders: &[Option<usize>]) -> Observed {
    let mut model = observed.ideal();
    for (r, s) in model.rounds[recipient].iter_mut().enumerate() {
        let deposit = senders
            .get(r)
            .copied()
            .flatten()
            .is_some_and(|c| observed.rounds[c][r].is_some());
        if let Some(sig) = s {
            *sig = u64::from(deposit);
        }
    }
    model
}

fn covariance(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().max(1) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / n
}

/// The attack's score of each candidate as `recipient`'s correspondent over `rounds`: the
/// higher, the more suspected.
pub fn scores(
    observed: &Observed,
    recipient: usize,
    candidates: &[usize],
    rounds: Range<usize>,
) -> Vec<f64> {
    let target = observed.unusual(recipient)[rounds.clone()].to_vec();
    candidates
        .iter()
        .map(|&c| {
            let online: Vec<f64> = rounds.clone().map(|r| observed.online(c, r)).collect();
            let unusual = observed.unusual(c)[rounds.clone()].to_vec();
            covariance(&target, &online).abs()
                + covariance(&target, &unusual).abs()
                + observed.apart(c, &rounds)
        })
        .collect()
}

/// Ranks from scores: 1 for the highest, ties sharing their mean rank.
pub fn ranks(scores: &[f64]) -> Vec<f64> {
    scores
        .iter()
        .map(|&s| {
            let above = scores.iter().filter(|&&t| t > s).count() as f64;
            let tied = scores.iter().filter(|&&t| t == s).count() as f64;
            above + (tied + 1.0) / 2.0
        })
        .collect()
}

/// One episode: the rounds it spans and its true sender (an index into the candidates).
#[derive(Clone, Debug)]
pub struct Episode {
    /// Its rounds.
    pub rounds: Range<usize>,
    /// The candidate who wrote to the recipient.
    pub sender: usize,
}

/// The attack's outcome over every episode.
#[derive(Clone, Debug)]
pub struct RankTest {
    /// The true sender's rank in each episode (1 = most suspected).
    pub ranks: Vec<f64>,
    /// Their sum.
    pub statistic: f64,
    /// The chance that senders drawn at random rank at least as high.
    pub p_value: f64,
}

/// Runs the attack on every episode, and its p-value by `draws` Monte Carlo draws.
pub fn rank_test<R: Rng + ?Sized>(
    observed: &Observed,
    recipient: usize,
    candidates: &[usize],
    episodes: &[Episode],
    draws: usize,
    rng: &mut R,
) -> RankTest {
    let per: Vec<Vec<f64>> = episodes
        .iter()
        .map(|e| ranks(&scores(observed, recipient, candidates, e.rounds.clone())))
        .collect();
    let true_ranks: Vec<f64> = per.iter().zip(episodes).map(|(r, e)| r[e.sender]).collect();
    let statistic: f64 = true_ranks.iter().sum();
    let mut as_good = 1usize;
    for _ in 0..draws {
        let t: f64 = per.iter().map(|r| r[rng.random_range(0..r.len())]).sum();
        if t <= statistic + 1e-9 {
            as_good += 1;
        }
    }
    RankTest {
        ranks: true_ranks,
        statistic,
        p_value: as_good as f64 / (draws + 1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Six episodes of six rounds: a recipient (client 0) always online, five candidates
    /// online each round with probability 1/2, and in every episode both online and offline
    /// at least once (as `tests/suite/intersection.rs` scripts them); a random sender per
    /// episode.
    fn world(rng: &mut StdRng) -> (Observed, Vec<Episode>, Vec<Option<usize>>) {
        let rounds = 36;
        let mut obs = Observed {
            rounds: vec![vec![Some(7); rounds]],
        };
        for _ in 0..5 {
            let mut row = Vec::new();
            while row.len() < rounds {
                let p: Vec<Option<u64>> =
                    (0..6).map(|_| rng.random_bool(0.5).then_some(7)).collect();
                if p.contains(&None) && p.contains(&Some(7)) {
                    row.extend(p);
                }
            }
            obs.rounds.push(row);
        }
        let mut episodes = Vec::new();
        let mut senders = vec![None; rounds];
        for e in 0..6 {
            let sender = rng.random_range(0..5);
            for s in &mut senders[e * 6..e * 6 + 6] {
                *s = Some(sender + 1);
            }
            episodes.push(Episode {
                rounds: e * 6..e * 6 + 6,
                sender,
            });
        }
        (obs, episodes, senders)
    }

    #[test]
    fn the_inbox_leak_gives_the_sender_away_and_online_times_do_not() {
        let mut rng = StdRng::seed_from_u64(13);
        let candidates = [1, 2, 3, 4, 5];
        let (mut fails, mut passes) = (0, 0);
        for _ in 0..20 {
            let (obs, episodes, senders) = world(&mut rng);
            let ideal = rank_test(&obs.ideal(), 0, &candidates, &episodes, 9_999, &mut rng);
            // Every score equal: every rank 3, the sum the null's median.
            assert_eq!(ideal.ranks, vec![3.0; 6]);
            assert!(ideal.p_value > 0.3, "{ideal:?}");
            let inbox = inbox_model(&obs, 0, &senders);
            let leaked = rank_test(&inbox, 0, &candidates, &episodes, 9_999, &mut rng);
            fails += usize::from(leaked.p_value < 1e-3);
            // A sender who looks unusual whenever it sends (a flag in its frames) is found
            // too, with the recipient showing nothing.
            let mut flagged = obs.clone();
            for e in &episodes {
                for r in e.rounds.clone() {
                    if let Some(s) = &mut flagged.rounds[e.sender + 1][r] {
                        *s = 8;
                    }
                }
            }
            let t = rank_test(&flagged, 0, &candidates, &episodes, 9_999, &mut rng);
            passes += usize::from(t.p_value >= 1e-3);
        }
        assert!(
            fails >= 18,
            "the inbox leak was found in {fails} of 20 worlds"
        );
        assert!(passes <= 1, "a flagged sender was missed in {passes} of 20");
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 0.5]), vec![1.5, 3.0, 1.5, 4.0]);
    }
}
