"""The seeded simulated catalogue: item records in the reco-catalog wire format."""

from __future__ import annotations

import random

# Category -> (nouns for titles, median price). Medians differ so price features carry signal.
_CATEGORIES: dict[str, tuple[tuple[str, ...], float]] = {
    "kitchen": (("Mug", "Kettle", "Pan", "Knife Set", "Cutting Board"), 25.0),
    "garden": (("Hose", "Planter", "Trowel", "Seed Kit", "Watering Can"), 30.0),
    "books": (("Novel", "Cookbook", "Atlas", "Notebook", "Journal"), 15.0),
    "toys": (("Puzzle", "Robot", "Kite", "Plush Bear", "Block Set"), 20.0),
    "outdoor": (("Tent", "Lantern", "Backpack", "Sleeping Bag", "Camp Stove"), 60.0),
    "electronics": (("Headphones", "Charger", "Speaker", "Power Bank", "Cable"), 45.0),
    "beauty": (("Serum", "Lipstick", "Brush", "Face Mask", "Perfume"), 18.0),
    "sports": (("Yoga Mat", "Racket", "Ball", "Dumbbell", "Water Bottle"), 28.0),
    "pets": (("Leash", "Pet Bed", "Chew Toy", "Bowl", "Collar"), 16.0),
    "home": (("Lamp", "Cushion", "Rug", "Vase", "Blanket"), 35.0),
    "office": (("Pen Set", "Stapler", "Desk Lamp", "Planner", "Organizer"), 14.0),
    "fashion": (("Scarf", "Cap", "Belt", "Socks", "Tote Bag"), 22.0),
}
_GENERIC_NOUNS = ("Gadget", "Kit", "Set", "Bundle", "Pack")
_BRANDS = (
    "Acme", "Nordlys", "Verde", "Lumen", "Atlas", "Brightside", "Oakline", "Pico",
    "Zenith", "Harbor", "Kestrel", "Juniper", "Solace", "Tundra", "Maple", "Orbit",
)  # fmt: skip
_ADJECTIVES = (
    "Blue", "Red", "Green", "Black", "White", "Grey", "Compact", "Classic", "Deluxe", "Mini",
    "Pro", "Eco",
)  # fmt: skip
_TAGS = (
    "ceramic", "wooden", "steel", "cotton", "organic", "wireless", "handmade", "premium",
    "kids", "travel", "gift", "waterproof", "recycled", "bestseller",
)  # fmt: skip


def make_catalog(
    n_items: int = 200,
    n_categories: int = 8,
    n_brands: int = 12,
    seed: int = 0,
    out_of_stock_share: float = 0.03,
) -> list[dict[str, object]]:
    """Return `n_items` catalogue records in the reco-catalog wire format, fixed by `seed`."""
    if n_items < 1 or n_categories < 1 or n_brands < 1:
        raise ValueError("n_items, n_categories and n_brands must be at least 1")
    if not 0.0 <= out_of_stock_share <= 1.0:
        raise ValueError(f"out_of_stock_share must be in [0, 1], got {out_of_stock_share}")
    rng = random.Random(seed)
    known = list(_CATEGORIES)
    categories: list[tuple[str, tuple[str, ...], float]] = []
    for i in range(n_categories):
        if i < len(known):
            nouns, median = _CATEGORIES[known[i]]
            categories.append((known[i], nouns, median))
        else:
            categories.append((f"category-{i}", _GENERIC_NOUNS, rng.uniform(10.0, 80.0)))
    brands = [_BRANDS[i] if i < len(_BRANDS) else f"brand-{i}" for i in range(n_brands)]
    width = max(4, len(str(n_items - 1)))
    catalog: list[dict[str, object]] = []
    for i in range(n_items):
        # The first items cycle through the categories so none of them is empty.
        name, nouns, median = categories[i if i < n_categories else rng.randrange(n_categories)]
        brand = rng.choice(brands)
        adjective = rng.choice(_ADJECTIVES)
        catalog.append(
            {
                "item_id": f"item-{i:0{width}d}",
                "title": f"{brand} {adjective} {rng.choice(nouns)}",
                "category": name,
                "brand": brand,
                "price": round(max(0.99, median * rng.lognormvariate(0.0, 0.6)), 2),
                "in_stock": rng.random() >= out_of_stock_share,
                "tags": [adjective.lower(), *rng.sample(_TAGS, rng.randint(0, 2))],
                "margin": round(rng.uniform(0.05, 0.5), 2),
            }
        )
    return catalog
