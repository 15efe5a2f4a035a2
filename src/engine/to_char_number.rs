//! `to_char(number, text)` with PostgreSQL's numeric template patterns
//! (formatting.c's NUM_ patterns): digit positions `9` (a blank where the
//! number has no digit) and `0` (a zero there, and in every position after
//! it), `.`/`D`, `,`/`G` (printed only once a digit has been), `FM`
//! (no padding, no trailing zeros at `9` positions of the fraction), the
//! signs `S`, `MI`, `PL`, `SG`, `PR`, `TH`/`th`, `V` (times ten to the
//! number of digits after it), `EEEE`, `RN`/`rn`, `L` (the C locale's
//! currency symbol, a blank), `"quoted"` text and any other character as
//! itself. Without a sign pattern a sign position is kept before the
//! number, `-` or a blank, as PostgreSQL keeps it. A number with more
//! integer digits than the pattern has positions prints `#` in each.
//!
//! Integers and `numeric` round half away from zero, as PostgreSQL's
//! numeric does; floats round as `printf("%.*f")` does, as PostgreSQL's
//! float4/float8 `to_char` does.

/// A number to print: its sign, and its magnitude as an exact decimal
/// (integers, numeric) or a binary float.
pub enum Number<'a> {
    Exact { negative: bool, digits: &'a str },
    Float(f64),
}

impl Number<'_> {
    fn negative(&self) -> bool {
        match self {
            Number::Exact { negative, .. } => *negative,
            Number::Float(f) => f.is_sign_negative() && *f != 0.0,
        }
    }

    /// Integer and fraction digits of |value| × 10^shift rounded to
    /// `frac` digits (the integer part without leading zeros; empty for
    /// zero, as PostgreSQL leaves a `9` position blank for it).
    fn digits(&self, shift: usize, frac: usize) -> Option<(String, String)> {
        let text = match self {
            Number::Float(f) => {
                if !f.is_finite() {
                    return None;
                }
                format!("{:.*}", frac, f.abs() * 10f64.powi(shift as i32))
            }
            Number::Exact { digits, .. } => round_exact(&shift_point(digits, shift), frac),
        };
        let (int, fraction) = text.split_once('.').unwrap_or((&text, ""));
        let int = int.trim_start_matches('0').to_string();
        let mut fraction = fraction.to_string();
        while fraction.len() < frac {
            fraction.push('0');
        }
        Some((int, fraction))
    }

    fn as_f64(&self) -> f64 {
        match self {
            Number::Float(f) => f.abs(),
            Number::Exact { digits, .. } => digits.parse().unwrap_or(f64::NAN),
        }
    }
}

/// `digits` (an unsigned decimal) with its point moved `shift` places right.
fn shift_point(digits: &str, shift: usize) -> String {
    if shift == 0 {
        return digits.to_string();
    }
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut frac = frac.to_string();
    while frac.len() < shift {
        frac.push('0');
    }
    format!("{int}{}.{}", &frac[..shift], &frac[shift..])
}

/// An unsigned decimal rounded half away from zero to `frac` digits.
fn round_exact(digits: &str, frac: usize) -> String {
    let (int, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let mut all: Vec<u8> = int.bytes().collect();
    let kept: Vec<u8> = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(frac)
        .collect();
    all.extend(&kept);
    if fraction.as_bytes().get(frac).is_some_and(|d| *d >= b'5') {
        let mut i = all.len();
        loop {
            if i == 0 {
                all.insert(0, b'1');
                break;
            }
            i -= 1;
            if all[i] == b'9' {
                all[i] = b'0';
            } else {
                all[i] += 1;
                break;
            }
        }
    }
    let split = all.len() - frac;
    let (i, f) = all.split_at(split);
    let int = String::from_utf8_lossy(i).into_owned();
    if frac == 0 {
        int
    } else {
        format!("{int}.{}", String::from_utf8_lossy(f))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Nine,
    Zero,
    Point,
    Group,
    /// `S`: the sign, `+` or `-`, anchored to the number.
    S,
    Mi,
    Pl,
    Sg,
    Pr,
    Th(bool),
    V,
    Eeee,
    Rn(bool),
    Currency,
    Lit(String),
}

fn parse(pattern: &str) -> (Vec<Tok>, bool) {
    const WORDS: &[(&str, Option<Tok>)] = &[
        ("FM", None),
        ("fm", None),
        ("EEEE", Some(Tok::Eeee)),
        ("eeee", Some(Tok::Eeee)),
        ("MI", Some(Tok::Mi)),
        ("mi", Some(Tok::Mi)),
        ("PL", Some(Tok::Pl)),
        ("pl", Some(Tok::Pl)),
        ("SG", Some(Tok::Sg)),
        ("sg", Some(Tok::Sg)),
        ("PR", Some(Tok::Pr)),
        ("pr", Some(Tok::Pr)),
        ("TH", Some(Tok::Th(true))),
        ("th", Some(Tok::Th(false))),
        ("RN", Some(Tok::Rn(true))),
        ("rn", Some(Tok::Rn(false))),
        ("9", Some(Tok::Nine)),
        ("0", Some(Tok::Zero)),
        (".", Some(Tok::Point)),
        ("D", Some(Tok::Point)),
        ("d", Some(Tok::Point)),
        (",", Some(Tok::Group)),
        ("G", Some(Tok::Group)),
        ("g", Some(Tok::Group)),
        ("S", Some(Tok::S)),
        ("s", Some(Tok::S)),
        ("V", Some(Tok::V)),
        ("v", Some(Tok::V)),
        ("L", Some(Tok::Currency)),
        ("l", Some(Tok::Currency)),
    ];
    let mut toks = Vec::new();
    let mut fm = false;
    let mut rest = pattern;
    let mut seen_point = false;
    'outer: while let Some(c) = rest.chars().next() {
        if c == '"' {
            let body = &rest[1..];
            let end = body.find('"').unwrap_or(body.len());
            toks.push(Tok::Lit(body[..end].to_string()));
            rest = body.get(end + 1..).unwrap_or("");
            continue;
        }
        if c == '\\' && rest.len() > 1 {
            let next = rest[1..].chars().next().unwrap_or('\\');
            toks.push(Tok::Lit(next.to_string()));
            rest = &rest[1 + next.len_utf8()..];
            continue;
        }
        for (word, tok) in WORDS {
            if rest.starts_with(word) {
                match tok {
                    None => fm = true,
                    // A second point is a literal, as in PostgreSQL's
                    // "multiple decimal points" check (which errors);
                    // eddy prints it.
                    Some(Tok::Point) if seen_point => toks.push(Tok::Lit(word.to_string())),
                    Some(t) => {
                        seen_point |= *t == Tok::Point;
                        toks.push(t.clone());
                    }
                }
                rest = &rest[word.len()..];
                continue 'outer;
            }
        }
        toks.push(Tok::Lit(c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    (toks, fm)
}

/// A piece of output; `Pad` is padding that FM removes.
enum Piece {
    Text(String),
    Pad(usize),
}

/// `value` printed by PostgreSQL's numeric template `pattern`.
pub fn format(value: &Number<'_>, pattern: &str) -> String {
    let (toks, fm) = parse(pattern);
    let negative = value.negative();
    if let Some(upper) = toks.iter().find_map(|t| match t {
        Tok::Rn(u) => Some(*u),
        _ => None,
    }) {
        return roman(value, upper, fm);
    }
    let is_digit = |t: &Tok| matches!(t, Tok::Nine | Tok::Zero);
    let point = toks.iter().position(|t| *t == Tok::Point);
    let v_at = toks.iter().position(|t| *t == Tok::V);
    let before = |i: usize| point.is_none_or(|p| i < p);
    let int_pos: Vec<usize> = (0..toks.len())
        .filter(|&i| is_digit(&toks[i]) && before(i))
        .collect();
    let frac_pos: Vec<usize> = (0..toks.len())
        .filter(|&i| is_digit(&toks[i]) && !before(i))
        .collect();
    let shift = v_at.map_or(0, |v| int_pos.iter().filter(|&&i| i > v).count());
    if toks.contains(&Tok::Eeee) {
        return scientific(value, frac_pos.len(), fm);
    }
    let digits = value.digits(shift, frac_pos.len());
    let overflow = match &digits {
        Some((int, _)) => int.len() > int_pos.len(),
        None => true,
    };
    let (mut int, frac) = digits.unwrap_or_default();
    // Zero with no fraction in the pattern prints one `0` (with one, a
    // `9` position before the point stays blank: `.50`).
    if int.is_empty() && frac_pos.is_empty() && !overflow {
        int.push('0');
    }
    let explicit_sign = toks
        .iter()
        .any(|t| matches!(t, Tok::S | Tok::Mi | Tok::Sg | Tok::Pr));
    // The first integer position that prints: where the number's digits
    // start, or the first `0` position if earlier.
    let first_zero = int_pos.iter().position(|&i| toks[i] == Tok::Zero);
    let digits_start = int_pos.len().saturating_sub(int.len());
    let print_from = first_zero.map_or(digits_start, |z| z.min(digits_start));
    // FM drops zeros at `9` fraction positions after the last `0` one.
    let mut frac_len = frac.len();
    if fm {
        let last_zero = frac_pos.iter().rposition(|&i| toks[i] == Tok::Zero);
        let keep = last_zero.map_or(0, |z| z + 1);
        while frac_len > keep && frac.as_bytes()[frac_len - 1] == b'0' {
            frac_len -= 1;
        }
    }
    let sign_char = |plus: &str| {
        if negative {
            "-".to_string()
        } else {
            plus.to_string()
        }
    };
    let mut out: Vec<Piece> = Vec::new();
    let mut started = false;
    let mut anchored_sign = if explicit_sign {
        None
    } else {
        Some(if negative { "-" } else { " " }.to_string())
    };
    if toks.first() == Some(&Tok::S)
        || toks
            .iter()
            .take_while(|t| !is_digit(t))
            .any(|t| *t == Tok::S)
    {
        anchored_sign = Some(sign_char("+"));
    }
    let mut int_seen = 0usize;
    let mut frac_seen = 0usize;
    if toks.contains(&Tok::Pr) {
        out.push(if negative {
            Piece::Text("<".into())
        } else {
            Piece::Pad(1)
        });
    }
    let start = |out: &mut Vec<Piece>, started: &mut bool, sign: &mut Option<String>| {
        if !*started {
            *started = true;
            if let Some(s) = sign.take() {
                out.push(if s == " " {
                    Piece::Pad(1)
                } else {
                    Piece::Text(s)
                });
            }
        }
    };
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Nine | Tok::Zero if before(i) => {
                let k = int_seen;
                int_seen += 1;
                if overflow {
                    start(&mut out, &mut started, &mut anchored_sign);
                    out.push(Piece::Text("#".into()));
                } else if k >= print_from {
                    start(&mut out, &mut started, &mut anchored_sign);
                    let d = if k >= digits_start {
                        int.as_bytes()[k - digits_start] as char
                    } else {
                        '0'
                    };
                    out.push(Piece::Text(d.to_string()));
                } else {
                    out.push(Piece::Pad(1));
                }
            }
            Tok::Nine | Tok::Zero => {
                let k = frac_seen;
                frac_seen += 1;
                if overflow {
                    out.push(Piece::Text("#".into()));
                } else if k < frac_len {
                    out.push(Piece::Text((frac.as_bytes()[k] as char).to_string()));
                }
            }
            Tok::Point => {
                start(&mut out, &mut started, &mut anchored_sign);
                out.push(Piece::Text(".".into()));
            }
            Tok::Group => {
                if started {
                    out.push(Piece::Text(",".into()));
                } else {
                    out.push(Piece::Pad(1));
                }
            }
            Tok::S => {
                if anchored_sign.is_none() && started && !toks[..i].iter().all(|t| !is_digit(t)) {
                    out.push(Piece::Text(sign_char("+")));
                }
            }
            Tok::Mi => out.push(if negative {
                Piece::Text("-".into())
            } else {
                Piece::Pad(1)
            }),
            Tok::Pl => out.push(if negative {
                Piece::Pad(1)
            } else {
                Piece::Text("+".into())
            }),
            Tok::Sg => out.push(Piece::Text(sign_char("+"))),
            Tok::Pr => {}
            Tok::Th(upper) => {
                if !overflow {
                    let suffix = ordinal(&int);
                    out.push(Piece::Text(if *upper {
                        suffix.to_uppercase()
                    } else {
                        suffix.to_string()
                    }));
                }
            }
            Tok::V | Tok::Eeee | Tok::Rn(_) => {}
            Tok::Currency => out.push(Piece::Pad(1)),
            Tok::Lit(s) => out.push(Piece::Text(s.clone())),
        }
    }
    // A number with no printed position (zero in `999`): its sign still
    // has its place.
    start(&mut out, &mut started, &mut anchored_sign);
    if toks.contains(&Tok::Pr) {
        out.push(if negative {
            Piece::Text(">".into())
        } else {
            Piece::Pad(1)
        });
    }
    out.into_iter()
        .map(|p| match p {
            Piece::Text(s) => s,
            Piece::Pad(n) if !fm => " ".repeat(n),
            Piece::Pad(_) => String::new(),
        })
        .collect()
}

/// English ordinal suffix of an integer's decimal digits.
fn ordinal(int: &str) -> &'static str {
    let b = int.as_bytes();
    let last = b.last().map_or(0, |d| d - b'0');
    let tens = if b.len() >= 2 {
        b[b.len() - 2] - b'0'
    } else {
        0
    };
    match (tens, last) {
        (1, _) => "th",
        (_, 1) => "st",
        (_, 2) => "nd",
        (_, 3) => "rd",
        _ => "th",
    }
}

/// `EEEE`: d.ddd e±XX, the sign place kept as elsewhere.
fn scientific(value: &Number<'_>, frac: usize, fm: bool) -> String {
    let v = value.as_f64();
    if !v.is_finite() {
        return format!(" {}e+##", "#".repeat(frac + 1));
    }
    let text = format!("{:.*e}", frac, v);
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if value.negative() {
        "-"
    } else if fm {
        ""
    } else {
        " "
    };
    format!(
        "{sign}{mantissa}e{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.abs()
    )
}

/// `RN`: roman numerals of the rounded value (1–3999), right-aligned in 15
/// places unless FM; `#` otherwise.
fn roman(value: &Number<'_>, upper: bool, fm: bool) -> String {
    let n = value.as_f64().round();
    let text = if value.negative() || !(1.0..=3999.0).contains(&n) {
        "#".repeat(15)
    } else {
        let mut n = n as u32;
        let mut s = String::new();
        for (v, r) in [
            (1000, "M"),
            (900, "CM"),
            (500, "D"),
            (400, "CD"),
            (100, "C"),
            (90, "XC"),
            (50, "L"),
            (40, "XL"),
            (10, "X"),
            (9, "IX"),
            (5, "V"),
            (4, "IV"),
            (1, "I"),
        ] {
            while n >= v {
                s.push_str(r);
                n -= v;
            }
        }
        if upper { s } else { s.to_lowercase() }
    };
    if fm { text } else { format!("{text:>15}") }
}

#[cfg(test)]
mod tests {
    use super::{Number, format};

    fn exact(s: &str) -> Number<'_> {
        match s.strip_prefix('-') {
            Some(d) => Number::Exact {
                negative: true,
                digits: d,
            },
            None => Number::Exact {
                negative: false,
                digits: s,
            },
        }
    }

    /// Each expected text is what PostgreSQL 15 prints (`numeric` input;
    /// the two floats as `float8`).
    #[test]
    fn prints_as_postgresql_does() {
        for (value, pattern, want) in [
            ("5", "999", "   5"),
            ("-5", "999", "  -5"),
            ("5", "000", " 005"),
            ("-5", "000", "-005"),
            ("12.5", "999.9", "  12.5"),
            ("12.5", "FM999.9", "12.5"),
            ("1234.5", "FM9,999.00", "1,234.50"),
            ("1234.5", "9G999D99", " 1,234.50"),
            ("0.5", "999.99", "    .50"),
            ("0.5", "990.99", "   0.50"),
            ("0.5", "FM999.99", ".5"),
            ("-0.5", "999.99", "   -.50"),
            ("5", "FM999.99", "5."),
            ("12345", "999", " ###"),
            ("12345.6", "999.9", " ###.#"),
            ("2.675", "9.99", " 2.68"),
            ("-2.5", "9", "-3"),
            ("485", "999th", " 485th"),
            ("-485", "999PR", "<485>"),
            ("485", "999PR", " 485 "),
            ("-485", "999MI", "485-"),
            ("485", "SG999", "+485"),
            ("-485", "S999", "-485"),
            ("485", "999S", "485+"),
            ("12", "99V9", " 120"),
            ("148.5", "\"Total: \"999.9", "Total:  148.5"),
            ("1234.5", "9.99EEEE", " 1.23e+03"),
            ("1999", "RN", "        MCMXCIX"),
            ("1999", "FMrn", "mcmxcix"),
            ("1", "FM9th", "1st"),
            ("12", "FM99th", "12th"),
            ("22", "FM99TH", "22ND"),
            ("0", "999", "   0"),
            ("0", "9990", "    0"),
            ("5", "FM999MI", "5"),
            ("-5", "PL999", "   -5"),
            ("5", "PL999", "+   5"),
            ("1.5", "FM9.90", "1.50"),
            ("-12", "S9999", "  -12"),
            ("12", "9999S", "  12+"),
            ("3", "L999", "    3"),
        ] {
            assert_eq!(format(&exact(value), pattern), want, "{value} {pattern}");
        }
        assert_eq!(format(&Number::Float(2.675), "9.99"), " 2.67");
        assert_eq!(format(&Number::Float(-1.5), "FM990.00"), "-1.50");
    }
}
