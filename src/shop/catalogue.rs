//! The reference shop's small catalogue, and which items match what the caller asked for
//! (the INVITE body, e.g. "red wine, under 30 EUR").

/// One article for sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Stable id, used in forms.
    pub id: &'static str,
    pub name: &'static str,
    /// Price of one, in minor units of [`CURRENCY`].
    pub unit_amount: i64,
    /// Lower-case words a request may use to find it.
    pub keywords: &'static [&'static str],
}

/// The currency of every price (and of the demo tariff).
pub const CURRENCY: &str = "EUR";

/// Everything the shop sells.
pub const ITEMS: &[Item] = &[
    Item {
        id: "rioja",
        name: "Rioja Reserva 2019 (red wine)",
        unit_amount: 1890,
        keywords: &["red", "wine", "rioja"],
    },
    Item {
        id: "chianti",
        name: "Chianti Classico 2021 (red wine)",
        unit_amount: 1450,
        keywords: &["red", "wine", "chianti"],
    },
    Item {
        id: "barolo",
        name: "Barolo 2018 (red wine)",
        unit_amount: 4200,
        keywords: &["red", "wine", "barolo"],
    },
    Item {
        id: "sancerre",
        name: "Sancerre 2022 (white wine)",
        unit_amount: 2200,
        keywords: &["white", "wine", "sancerre"],
    },
    Item {
        id: "cava",
        name: "Cava Brut (sparkling wine)",
        unit_amount: 990,
        keywords: &["sparkling", "wine", "cava", "bubbles"],
    },
    Item {
        id: "rose-book",
        name: "The Name of the Rose (book)",
        unit_amount: 1200,
        keywords: &["book", "books", "novel", "eco"],
    },
    Item {
        id: "dune",
        name: "Dune (book)",
        unit_amount: 1100,
        keywords: &["book", "books", "novel", "science", "fiction"],
    },
    Item {
        id: "cosmos",
        name: "Cosmos (book)",
        unit_amount: 1500,
        keywords: &["book", "books", "science", "sagan"],
    },
];

/// The item with this id.
pub fn item(id: &str) -> Option<&'static Item> {
    ITEMS.iter().find(|i| i.id == id)
}

/// The items matching `asked`, best first: an item scores one point per word of the request
/// among its keywords; `under N` (N in major units) drops dearer items. An empty or
/// unmatched request shows everything.
pub fn matching(asked: &str) -> Vec<&'static Item> {
    let lower = asked.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let limit = words
        .windows(2)
        .find(|w| w[0] == "under")
        .and_then(|w| w[1].parse::<i64>().ok())
        .map(|major| major.saturating_mul(100));
    let affordable = |i: &&Item| limit.is_none_or(|l| i.unit_amount <= l);
    let mut scored: Vec<(usize, &'static Item)> = ITEMS
        .iter()
        .filter(affordable)
        .map(|i| (words.iter().filter(|w| i.keywords.contains(w)).count(), i))
        .filter(|(score, _)| *score > 0)
        .collect();
    if scored.is_empty() {
        return ITEMS.iter().filter(affordable).collect();
    }
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    let best = scored[0].0;
    scored
        .into_iter()
        .filter(|(s, _)| *s == best)
        .map(|(_, i)| i)
        .collect()
}

/// `1890` → `18.90 EUR`.
pub fn price(minor: i64) -> String {
    format!("{}.{:02} {CURRENCY}", minor / 100, minor % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn red_wine_under_30_finds_the_affordable_reds() {
        let ids: Vec<_> = matching("red wine, under 30 EUR")
            .iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, ["rioja", "chianti"]);
    }

    #[test]
    fn books_and_nonsense() {
        assert!(matching("books")
            .iter()
            .all(|i| i.keywords.contains(&"books")));
        assert_eq!(matching("zzz").len(), ITEMS.len());
        assert_eq!(matching("").len(), ITEMS.len());
        assert_eq!(price(1890), "18.90 EUR");
    }
}
