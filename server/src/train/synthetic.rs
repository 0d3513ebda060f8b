//! A synthetic card-and-payments transaction generator for the bundled demo
//! fraud models. Each segment has its own customers and its own fraud
//! patterns (see `models/README.md`), so a per-segment model is worth having.
//! Seeded, so training data, held-out data and the committed weights are
//! reproducible. Not a source of truth about real fraud.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Exp, LogNormal, Poisson};

/// The 30 input features, in row order.
pub const FEATURES: [&str; 30] = [
    "amount_log",
    "amount_to_avg_ratio",
    "hour_sin",
    "hour_cos",
    "is_weekend",
    "is_night",
    "card_present",
    "is_foreign",
    "distance_from_home_log",
    "txn_count_1h",
    "txn_count_24h",
    "amount_24h_log",
    "account_age_days_log",
    "device_new",
    "ip_risk",
    "email_domain_risk",
    "failed_logins_24h",
    "merchant_risk",
    "mcc_risk",
    "shipping_billing_mismatch",
    "first_purchase_at_merchant",
    "chargebacks_90d",
    "beneficiary_new",
    "invoice_amount_mismatch",
    "round_amount",
    "crypto_merchant",
    "minutes_since_last_txn_log",
    "cards_on_device",
    "payee_country_risk",
    "seconds_login_to_txn_log",
];

/// The output labels: index 1 is the positive class.
pub const LABELS: [&str; 2] = ["legit", "fraud"];

/// The demo segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Retail,
    Corporate,
    Sme,
}

impl Segment {
    pub const ALL: [Segment; 3] = [Segment::Retail, Segment::Corporate, Segment::Sme];

    pub fn name(self) -> &'static str {
        match self {
            Segment::Retail => "retail",
            Segment::Corporate => "corporate",
            Segment::Sme => "sme",
        }
    }

    pub fn from_name(name: &str) -> Option<Segment> {
        Segment::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Share of transactions that are fraud.
    fn fraud_rate(self) -> f64 {
        match self {
            Segment::Retail => 0.06,
            Segment::Corporate => 0.04,
            Segment::Sme => 0.05,
        }
    }
}

/// Generated rows (row-major, `FEATURES.len()` per row) and their labels (1 = fraud).
pub struct Dataset {
    pub values: Vec<f32>,
    pub labels: Vec<u32>,
}

impl Dataset {
    pub fn rows(&self) -> usize {
        self.labels.len()
    }
}

/// The most features a widened dataset can have: the base features plus one
/// product per unordered pair of them.
pub const MAX_FEATURES: usize = FEATURES.len() + FEATURES.len() * (FEATURES.len() - 1) / 2;

/// The base feature pairs whose products make up features `FEATURES.len()..`
/// of a widened dataset, in column order. The pairs are taken in a fixed
/// stride through all pairs, so every base feature appears early and a model
/// of any width sees the same columns in the same order.
fn interaction_pairs(count: usize) -> Vec<(usize, usize)> {
    let n = FEATURES.len();
    let all: Vec<(usize, usize)> = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).collect();
    // 97 is prime and does not divide the pair count (435), so the stride
    // visits every pair once before repeating.
    (0..count).map(|k| all[(k * 97) % all.len()]).collect()
}

/// The names of the `count` features of a widened dataset (at least the base
/// features): the base features, then `a_x_b` for each interaction.
pub fn feature_names(count: usize) -> Vec<String> {
    let extra = count.saturating_sub(FEATURES.len());
    FEATURES
        .iter()
        .map(|s| s.to_string())
        .chain(interaction_pairs(extra).into_iter().map(|(a, b)| format!("{}_x_{}", FEATURES[a], FEATURES[b])))
        .collect()
}

impl Dataset {
    /// The same rows with `count` features (`FEATURES.len()..=MAX_FEATURES`):
    /// the base features followed by products of pairs of them, the feature
    /// crosses a tabular model is often fed. This is how the demo generator
    /// feeds a model wide enough that a GPU pays off.
    pub fn widen(self, count: usize) -> Dataset {
        assert!((FEATURES.len()..=MAX_FEATURES).contains(&count), "cannot widen to {count} features");
        if count == FEATURES.len() {
            return self;
        }
        let pairs = interaction_pairs(count - FEATURES.len());
        let mut values = Vec::with_capacity(self.rows() * count);
        for row in self.values.chunks_exact(FEATURES.len()) {
            values.extend_from_slice(row);
            values.extend(pairs.iter().map(|&(a, b)| row[a] * row[b]));
        }
        Dataset { values, labels: self.labels }
    }
}

/// Generates `rows` transactions of `segment` from `seed`.
pub fn generate(segment: Segment, rows: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(rows * FEATURES.len());
    let mut labels = Vec::with_capacity(rows);
    for _ in 0..rows {
        let fraud = rng.gen_bool(segment.fraud_rate());
        let mut t = Transaction::normal(segment, &mut rng);
        // About one fraud in ten looks entirely normal: real labels are noisy,
        // and a perfect score would teach nothing about the model.
        if fraud && rng.gen_bool(0.9) {
            t.apply_fraud(segment, &mut rng);
        }
        values.extend(t.features());
        labels.push(fraud as u32);
    }
    Dataset { values, labels }
}

/// One transaction's raw attributes, before they become features.
struct Transaction {
    amount: f64,
    amount_ratio: f64,
    hour: f64,
    weekend: bool,
    card_present: bool,
    foreign: bool,
    distance_km: f64,
    count_1h: f64,
    count_24h: f64,
    account_age_days: f64,
    device_new: bool,
    ip_risk: f64,
    email_risk: f64,
    failed_logins: f64,
    merchant_risk: f64,
    mcc_risk: f64,
    address_mismatch: bool,
    first_purchase: bool,
    chargebacks: f64,
    beneficiary_new: bool,
    invoice_mismatch: bool,
    round_amount: bool,
    crypto: bool,
    minutes_since_last: f64,
    cards_on_device: f64,
    payee_country_risk: f64,
    login_seconds: f64,
}

fn lognormal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    LogNormal::new(mu, sigma).expect("constant parameters are valid").sample(rng)
}

fn beta(rng: &mut ChaCha8Rng, a: f64, b: f64) -> f64 {
    Beta::new(a, b).expect("constant parameters are valid").sample(rng)
}

fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    Poisson::new(mean).expect("constant parameters are valid").sample(rng)
}

fn exp(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    Exp::new(1.0 / mean).expect("constant parameters are valid").sample(rng)
}

/// An hour of the day, mostly in business hours.
fn daytime_hour(rng: &mut ChaCha8Rng) -> f64 {
    (13.0 + 3.5 * rng.sample::<f64, _>(rand_distr::StandardNormal)).rem_euclid(24.0)
}

impl Transaction {
    fn normal(segment: Segment, rng: &mut ChaCha8Rng) -> Transaction {
        let (amount_mu, card_present) = match segment {
            Segment::Retail => (3.5, 0.6),
            Segment::Corporate => (8.0, 0.05),
            Segment::Sme => (5.5, 0.3),
        };
        let amount = lognormal(rng, amount_mu, 1.1);
        Transaction {
            amount,
            amount_ratio: lognormal(rng, 0.0, 0.5),
            hour: daytime_hour(rng),
            weekend: rng.gen_bool(if segment == Segment::Corporate { 0.05 } else { 2.0 / 7.0 }),
            card_present: rng.gen_bool(card_present),
            foreign: rng.gen_bool(0.05),
            distance_km: exp(rng, 15.0),
            count_1h: poisson(rng, 0.5),
            count_24h: poisson(rng, 3.0),
            account_age_days: rng.gen_range(30.0..3650.0),
            device_new: rng.gen_bool(0.08),
            ip_risk: beta(rng, 2.0, 8.0),
            email_risk: beta(rng, 1.5, 10.0),
            failed_logins: poisson(rng, 0.2),
            merchant_risk: beta(rng, 2.0, 10.0),
            mcc_risk: beta(rng, 2.0, 12.0),
            address_mismatch: rng.gen_bool(0.1),
            first_purchase: rng.gen_bool(0.2),
            chargebacks: poisson(rng, 0.05),
            beneficiary_new: rng.gen_bool(if segment == Segment::Retail { 0.01 } else { 0.06 }),
            invoice_mismatch: rng.gen_bool(0.03),
            round_amount: rng.gen_bool(0.1),
            crypto: rng.gen_bool(0.02),
            minutes_since_last: exp(rng, 600.0),
            cards_on_device: 1.0 + poisson(rng, 0.3),
            payee_country_risk: beta(rng, 1.0, 12.0),
            login_seconds: exp(rng, 180.0),
        }
    }

    /// Rewrites the transaction as one of the segment's two fraud patterns.
    /// Each trait of a pattern shows with probability 0.7, so no single
    /// feature gives a fraud away.
    fn apply_fraud(&mut self, segment: Segment, rng: &mut ChaCha8Rng) {
        let pattern_a = rng.gen_bool(0.5);
        let mut show = || rng.gen_bool(0.7);
        let traits: [bool; 6] = [show(), show(), show(), show(), show(), show()];
        match (segment, pattern_a) {
            // Account takeover: a new device, a risky IP, failed logins, and a
            // card-not-present purchase moments after logging in.
            (Segment::Retail, true) => {
                if traits[0] {
                    self.device_new = true;
                    self.card_present = false;
                }
                if traits[1] {
                    self.ip_risk = beta(rng, 6.0, 4.0);
                }
                if traits[2] {
                    self.failed_logins = 1.0 + poisson(rng, 2.0);
                }
                if traits[3] {
                    self.login_seconds = exp(rng, 15.0);
                }
                if traits[4] {
                    self.email_risk = beta(rng, 5.0, 5.0);
                }
                if traits[5] {
                    self.address_mismatch = true;
                }
            }
            // Stolen card spree abroad: at night, far from home, many quick
            // purchases well above the customer's usual ticket.
            (Segment::Retail, false) => {
                if traits[0] {
                    self.foreign = true;
                }
                if traits[1] {
                    self.hour = rng.gen_range(0.0..5.0);
                }
                if traits[2] {
                    self.count_1h = 2.0 + poisson(rng, 4.0);
                }
                if traits[3] {
                    self.amount_ratio = lognormal(rng, 1.2, 0.5);
                }
                if traits[4] {
                    self.distance_km = 500.0 + exp(rng, 2000.0);
                }
                if traits[5] {
                    self.cards_on_device = 2.0 + poisson(rng, 2.0);
                }
            }
            // Business email compromise: a round payment to a new payee in a
            // risky country, out of hours, far above the usual amount.
            (Segment::Corporate, true) => {
                if traits[0] {
                    self.beneficiary_new = true;
                }
                if traits[1] {
                    self.round_amount = true;
                }
                if traits[2] {
                    self.amount_ratio = lognormal(rng, 1.5, 0.5);
                }
                if traits[3] {
                    self.payee_country_risk = beta(rng, 5.0, 5.0);
                }
                if traits[4] {
                    self.weekend = true;
                }
                if traits[5] {
                    self.hour = rng.gen_range(18.0..24.0);
                }
            }
            // Invoice fraud: amounts that do not match the invoice, paid in
            // quick succession.
            (Segment::Corporate, false) => {
                if traits[0] {
                    self.invoice_mismatch = true;
                }
                if traits[1] {
                    self.count_24h = 6.0 + poisson(rng, 6.0);
                }
                if traits[2] {
                    self.minutes_since_last = exp(rng, 10.0);
                }
                if traits[3] {
                    self.beneficiary_new = true;
                }
                if traits[4] {
                    self.amount_ratio = lognormal(rng, 0.8, 0.4);
                }
                if traits[5] {
                    self.account_age_days = rng.gen_range(1.0..90.0);
                }
            }
            // Velocity burst at new merchants in risky categories.
            (Segment::Sme, true) => {
                if traits[0] {
                    self.count_1h = 3.0 + poisson(rng, 6.0);
                }
                if traits[1] {
                    self.minutes_since_last = exp(rng, 3.0);
                }
                if traits[2] {
                    self.first_purchase = true;
                }
                if traits[3] {
                    self.mcc_risk = beta(rng, 6.0, 4.0);
                }
                if traits[4] {
                    self.count_24h = 8.0 + poisson(rng, 8.0);
                }
                if traits[5] {
                    self.chargebacks = 1.0 + poisson(rng, 1.0);
                }
            }
            // Cash-out through crypto merchants from a fresh device and account.
            (Segment::Sme, false) => {
                if traits[0] {
                    self.crypto = true;
                }
                if traits[1] {
                    self.merchant_risk = beta(rng, 6.0, 4.0);
                }
                if traits[2] {
                    self.amount_ratio = lognormal(rng, 1.0, 0.5);
                }
                if traits[3] {
                    self.device_new = true;
                }
                if traits[4] {
                    self.account_age_days = rng.gen_range(1.0..60.0);
                }
                if traits[5] {
                    self.round_amount = true;
                }
            }
        }
        self.amount *= self.amount_ratio.max(0.05);
    }

    fn features(&self) -> [f32; 30] {
        let angle = self.hour / 24.0 * std::f64::consts::TAU;
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        [
            self.amount.ln_1p(),
            self.amount_ratio,
            angle.sin(),
            angle.cos(),
            flag(self.weekend),
            flag(self.hour < 6.0),
            flag(self.card_present),
            flag(self.foreign),
            self.distance_km.ln_1p(),
            self.count_1h,
            self.count_24h,
            (self.amount * (1.0 + self.count_24h)).ln_1p(),
            self.account_age_days.ln_1p(),
            flag(self.device_new),
            self.ip_risk,
            self.email_risk,
            self.failed_logins,
            self.merchant_risk,
            self.mcc_risk,
            flag(self.address_mismatch),
            flag(self.first_purchase),
            self.chargebacks,
            flag(self.beneficiary_new),
            flag(self.invoice_mismatch),
            flag(self.round_amount),
            flag(self.crypto),
            self.minutes_since_last.ln_1p(),
            self.cards_on_device,
            self.payee_country_risk,
            self.login_seconds.ln_1p(),
        ]
        .map(|v| v as f32)
    }
}
