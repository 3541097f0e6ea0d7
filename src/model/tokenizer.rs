//! The tokenizer: Hugging Face `tokenizer.json`, loaded or trained here as a byte-level BPE
//! with Qwen2's own pre-tokenizer, so every digit is its own token, as in Qwen2.5. Small
//! transformers learn arithmetic far better on one token per digit than on merged numbers.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::{ModelError, Result};

/// End of text: the token every completion ends with.
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// Padding for batches of rows of different lengths (never scored).
pub const PAD_TOKEN: &str = "<|pad|>";
/// Tokens the prompt format needs as single ids.
pub const SPECIAL_TOKENS: [&str; 6] = [
    EOS_TOKEN,
    PAD_TOKEN,
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
];

/// Qwen2's pre-tokenizer regex (from Qwen2.5's `tokenizer.json`): `\p{N}` matches one digit
/// at a time, so numbers are split into digits before any merge is learned.
pub const QWEN2_SPLIT_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's pre-tokenizer: the split regex with `Isolated` behaviour, then byte-level
/// without its own regex, exactly as Qwen2.5's `tokenizer.json` declares it.
fn qwen2_pre_tokenizer() -> std::result::Result<PreTokenizerWrapper, String> {
    let split = Split::new(
        SplitPattern::Regex(QWEN2_SPLIT_PATTERN.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| format!("Qwen2 split pattern: {e}"))?;
    Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
    ])))
}

/// A Hugging Face tokenizer with the ids chartrl needs resolved once.
#[derive(Clone)]
pub struct ChatTokenizer {
    inner: Tokenizer,
    eos_ids: Vec<u32>,
    pad_id: u32,
}

impl ChatTokenizer {
    /// Loads `tokenizer.json`. `eos_from_config` comes from `config.json` when present; without
    /// it the end-of-text token is looked up by name (`<|endoftext|>`, then `<|im_end|>`).
    pub fn load(path: &Path, eos_from_config: Option<Vec<u32>>) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Self::from_tokenizer(inner, eos_from_config).map_err(|msg| ModelError::Tokenizer {
            path: path.to_path_buf(),
            msg,
        })
    }

    fn from_tokenizer(
        inner: Tokenizer,
        eos_from_config: Option<Vec<u32>>,
    ) -> std::result::Result<Self, String> {
        let by_name = [EOS_TOKEN, "<|im_end|>", "</s>"]
            .iter()
            .find_map(|t| inner.token_to_id(t));
        let eos_ids = match eos_from_config {
            Some(ids) if !ids.is_empty() => ids,
            _ => vec![by_name.ok_or("no end-of-text token (<|endoftext|>) in the vocabulary")?],
        };
        let pad_id = inner.token_to_id(PAD_TOKEN).unwrap_or(eos_ids[0]);
        Ok(Self {
            inner,
            eos_ids,
            pad_id,
        })
    }

    /// Trains a byte-level BPE of `vocab_size` tokens (special tokens included) on `corpus`,
    /// behind Qwen2's pre-tokenizer (digits never merge).
    pub fn train<I, S>(corpus: I, vocab_size: usize) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let specials: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials.clone())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut tok = Tokenizer::new(BPE::default());
        tok.with_pre_tokenizer(Some(qwen2_pre_tokenizer().map_err(ModelError::Encode)?));
        tok.with_decoder(Some(ByteLevel::new(false, false, false)));
        tok.with_post_processor(Some(ByteLevel::new(false, false, false)));
        tok.train(&mut trainer, corpus)
            .map_err(|e| ModelError::Encode(format!("training the BPE tokenizer: {e}")))?;
        tok.add_special_tokens(&specials);
        Self::from_tokenizer(tok, None).map_err(ModelError::Encode)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| ModelError::Tokenizer {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })?;
        crate::fsx::write(path, json.as_bytes()).map_err(|e| ModelError::io(&e.path, e.source))
    }

    /// Token ids of `text`; special tokens written in the text become their single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| ModelError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens kept (so `<answer>` tags survive decoding).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| ModelError::Encode(e.to_string()))
    }

    /// The text of one token, for display.
    pub fn token_text(&self, id: u32) -> String {
        self.decode(&[id]).unwrap_or_else(|_| format!("<{id}>"))
    }

    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_ids[0]
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        (0..200)
            .map(|i| {
                format!(
                    "| Year | Sales |\n| 20{i:02} | {} |\nQuestion: What is the sales in 20{i:02}?\n\
                     <think>Step 1: read the row.</think><answer>{}</answer><|endoftext|>",
                    i * 7,
                    i * 7
                )
            })
            .collect()
    }

    #[test]
    fn trained_bpe_round_trips_and_keeps_special_tokens_whole() {
        let tok = ChatTokenizer::train(corpus().into_iter(), 300).unwrap();
        assert!(tok.vocab_size() <= 300);
        let text = "<think>Step 1: 42 - 7 = 35.</think><answer>35</answer>";
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
        let think = tok.encode("<think>").unwrap();
        assert_eq!(think.len(), 1);
        assert_eq!(tok.encode(EOS_TOKEN).unwrap(), vec![tok.eos_id()]);
        assert_ne!(tok.pad_id(), tok.eos_id());
    }

    #[test]
    fn digits_are_single_tokens_as_in_qwen2() {
        let tok = ChatTokenizer::train(corpus().into_iter(), 300).unwrap();
        for number in ["2024", "1387.25", "-40"] {
            let ids = tok.encode(number).unwrap();
            let digits = number.chars().filter(|c| c.is_ascii_digit()).count();
            let pieces: Vec<String> = ids.iter().map(|&i| tok.token_text(i)).collect();
            assert!(ids.len() >= digits, "{number}: {pieces:?}");
            for p in pieces
                .iter()
                .filter(|p| p.chars().any(|c| c.is_ascii_digit()))
            {
                assert_eq!(p.chars().count(), 1, "{number}: {pieces:?}");
            }
            assert_eq!(tok.decode(&ids).unwrap(), number);
        }
        let json = tok.inner.to_string(false).unwrap();
        assert!(
            json.contains("\"Split\"") && json.contains("Isolated"),
            "{json}"
        );
    }
}
