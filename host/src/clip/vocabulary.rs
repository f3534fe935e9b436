//! A tokenizer's vocabulary: its tokens numbered by id, and the map from a token back to its id.
//! CLIP's BPE and BERT's WordPiece number theirs the same way.

use std::collections::HashMap;

/// Tokens in id order, and each token's id.
#[derive(Debug, Clone)]
pub(super) struct Vocabulary {
    /// Token → id.
    ids: HashMap<String, u32>,
    /// Id → token.
    tokens: Vec<String>,
}

impl Vocabulary {
    /// The vocabulary of `tokens`, the token of id `i` at index `i`. A token listed twice keeps
    /// its last id, as both references' maps do (`dict(zip(vocab, range(len(vocab))))`, the
    /// `tokenizers` library's vocabulary reader). Ids are `u32`: the caller has checked that
    /// `tokens` has no more entries than that numbers (ids beyond it would not be stored).
    pub(super) fn new(tokens: Vec<String>) -> Self {
        let ids = tokens.iter().cloned().zip(0u32..).collect();
        Vocabulary { ids, tokens }
    }

    /// Number of ids (a token listed twice counts each time).
    pub(super) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The tokens in id order.
    pub(super) fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The id of `token`.
    pub(super) fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The token of `id`.
    pub(super) fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_token_keeps_its_last_id() {
        let vocab = Vocabulary::new(["a", "b", "a"].map(String::from).to_vec());
        assert_eq!(vocab.len(), 3);
        assert_eq!(
            (vocab.id("a"), vocab.id("b"), vocab.id("c")),
            (Some(2), Some(1), None)
        );
        assert_eq!(
            (vocab.token(0), vocab.token(2), vocab.token(3)),
            (Some("a"), Some("a"), None)
        );
    }
}
