//! What one statement may take: rows and bytes of answer, time, memory — and how complex its
//! text may be before it is planned at all.
//!
//! The complexity check comes first, over the tokens alone (no recursion): DataFusion's
//! parser bounds nesting, but a flat chain of one operator (`1+1+…`, `a=1 OR a=1 OR …`) is
//! parsed in a loop and then planned — and dropped — recursively, in time that grows with
//! its square: 2,000 terms took seconds and 20,000 aborted the process on a thread's stack.
//! So a statement of more than [`MAX_OPERATORS`] operators, or nested deeper than
//! [`MAX_DEPTH`], is refused (54001) before anything recursive sees it. An `IN` list of any
//! length is one operator: its values are a list, not a chain.
//!
//! ```
//! use atelier_lambda::sql::limits::check_complexity;
//! assert!(check_complexity("SELECT * FROM customers WHERE customer IN ('a', 'b', 'c')").is_ok());
//! let chain = format!("SELECT 1{}", "+1".repeat(10_000));
//! assert_eq!(check_complexity(&chain).unwrap_err().code(), "54001");
//! ```

use std::time::Duration;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::SqlError;

/// The most binary operators a statement may have.
pub const MAX_OPERATORS: usize = 1_000;
/// The deepest a statement's parentheses may nest.
pub const MAX_DEPTH: usize = 64;
/// The longest a statement's text may be, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 << 20;

/// What a statement may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most rows it may answer.
    pub max_rows: usize,
    /// The most bytes its answer may take (its Arrow arrays).
    pub max_bytes: usize,
    /// How long it may take, planning, execution and encoding together.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_rows: 100_000, max_bytes: 256 << 20, timeout: Duration::from_secs(10) }
    }
}

/// Refuses text too complex to plan safely (see the module's documentation).
pub fn check_complexity(text: &str) -> Result<(), SqlError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(SqlError::TooComplex(format!("{} bytes of text, at most {MAX_TEXT_BYTES}", text.len())));
    }
    let dialect = PostgreSqlDialect {};
    let tokens = match Tokenizer::new(&dialect, text).tokenize() {
        Ok(tokens) => tokens,
        // The parser says what is wrong, with the position.
        Err(_) => return Ok(()),
    };
    let (mut operators, mut depth, mut deepest) = (0usize, 0usize, 0usize);
    for token in &tokens {
        match token {
            Token::LParen | Token::LBracket => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret => operators += 1,
            Token::Word(word) => {
                use datafusion::sql::sqlparser::keywords::Keyword;
                if matches!(word.keyword, Keyword::AND | Keyword::OR | Keyword::LIKE | Keyword::ILIKE) {
                    operators += 1;
                }
            }
            _ => {}
        }
    }
    if operators > MAX_OPERATORS {
        return Err(SqlError::TooComplex(format!(
            "{operators} operators, at most {MAX_OPERATORS} (an IN list takes any number of values)"
        )));
    }
    if deepest > MAX_DEPTH {
        return Err(SqlError::TooComplex(format!("parentheses nested {deepest} deep, at most {MAX_DEPTH}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_chains_and_deep_nests_are_refused_before_planning() {
        assert!(check_complexity(&format!("SELECT 1{}", "+1".repeat(MAX_OPERATORS - 1))).is_ok());
        assert!(check_complexity(&format!("SELECT 1{}", "+1".repeat(100_000))).is_err());
        let ors = (0..5_000).map(|i| format!("customer = 'c{i}'")).collect::<Vec<_>>().join(" OR ");
        assert!(check_complexity(&format!("SELECT * FROM customers WHERE {ors}")).is_err());
        let deep = format!("SELECT {}1{}", "(".repeat(100), ")".repeat(100));
        assert!(check_complexity(&deep).is_err());
        let list = (0..50_000).map(|i| format!("'c{i}'")).collect::<Vec<_>>().join(", ");
        assert!(check_complexity(&format!("SELECT * FROM customers WHERE customer IN ({list})")).is_ok());
    }
}
