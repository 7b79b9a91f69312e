//! Topic name rules, as Kafka enforces them.

/// Longest legal topic name (Kafka's `Topic.MAX_NAME_LENGTH`).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Why a topic name is illegal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// Empty name.
    #[error("topic name is empty")]
    Empty,
    /// `.` or `..`.
    #[error("topic name cannot be \".\" or \"..\"")]
    Dots,
    /// Longer than 249 characters.
    #[error("topic name is {length} characters, longer than {TOPIC_NAME_BYTES_MAX}")]
    TooLong {
        /// The length.
        length: usize,
    },
    /// A character outside `[a-zA-Z0-9._-]`.
    #[error("topic name contains {character:?}; legal characters are ASCII letters, digits, '.', '_' and '-'")]
    IllegalCharacter {
        /// The first illegal character.
        character: char,
    },
}

/// Checks a topic name against Kafka's rules.
///
/// # Errors
/// The first rule the name breaks.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Dots);
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(TopicNameError::TooLong { length: name.len() });
    }
    if let Some(character) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(TopicNameError::IllegalCharacter { character });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
        assert_eq!(validate_topic_name(".."), Err(TopicNameError::Dots));
        assert!(matches!(validate_topic_name("a/b"), Err(TopicNameError::IllegalCharacter { character: '/' })));
        assert!(matches!(validate_topic_name(&"x".repeat(250)), Err(TopicNameError::TooLong { length: 250 })));
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
    }
}
