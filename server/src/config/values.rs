//! How setting values are read and bounded: addresses that may be `off`,
//! whole numbers and seconds within a range (a zero that would stop the
//! server, or a value no machine has, is refused naming the flag).

use std::net::SocketAddr;
use std::time::Duration;

/// A listening address that may be `off`; `flag` and `example` for the error.
pub(super) fn optional_address(flag: &str, text: &str, example: &str) -> Result<Option<SocketAddr>, String> {
    match text {
        "off" => Ok(None),
        text => text
            .parse()
            .map(Some)
            .map_err(|_| format!("{flag} `{text}` is neither an address (e.g. {example}) nor `off`")),
    }
}

/// A parser for a whole-number setting that refuses values outside
/// `min..=max` (a zero that would stop the server working, or a value no
/// machine has), naming the flag and the range.
pub(super) fn count<T>(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: std::error::Error + Send + Sync + 'static,
{
    clap::builder::RangedU64ValueParser::<T>::new().range(min..=max)
}

/// A parser for a number of seconds within `min..=max` (finite; a minimum of
/// 0 means 0 turns the feature off).
pub(super) fn seconds_within(
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text| match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (min..=max).contains(&seconds) => Ok(seconds),
        Ok(_) => Err(format!("give a number of seconds from {min} to {max}")),
        Err(_) => Err(format!("`{text}` is not a number of seconds (e.g. 0.5, 30)")),
    }
}

/// A number of seconds as a duration; zero or less is `None` (off).
pub fn seconds(value: f64) -> Option<Duration> {
    (value > 0.0).then(|| Duration::from_secs_f64(value))
}
