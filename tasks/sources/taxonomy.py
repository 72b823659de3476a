"""The synthetic generator's product text: a taxonomy in REES46's style (real words in dotted category codes),
brands per product kind, and search phrasings that depend on where the user is in a shopping mission.

Pure data and string building, no randomness of its own: tasks.sources.synthetic draws the choices from its
catalogue generator, so the behaviour it simulates does not change with the words here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Leaf:
    code: str  # REES46-style category code
    nouns: tuple[str, ...]  # what shoppers call it (synonyms)
    specs: tuple[str, ...]  # attributes a researcher compares
    brands: tuple[str, ...]


LEAVES: tuple[Leaf, ...] = (
    Leaf(
        "electronics.smartphone",
        ("smartphone", "phone", "mobile phone"),
        ("128gb", "5g", "dual sim", "oled screen"),
        ("samsung", "apple", "xiaomi", "huawei"),
    ),
    Leaf(
        "electronics.tablet",
        ("tablet", "ipad", "android tablet"),
        ("10 inch", "64gb", "lte", "stylus"),
        ("apple", "samsung", "lenovo"),
    ),
    Leaf(
        "electronics.audio.headphone",
        ("headphones", "earbuds", "headset"),
        ("noise cancelling", "bluetooth", "wireless", "bass"),
        ("sony", "jbl", "apple", "sennheiser"),
    ),
    Leaf(
        "electronics.audio.subwoofer",
        ("subwoofer", "speaker", "soundbar"),
        ("200w", "bluetooth", "bass", "wall mount"),
        ("jbl", "sony", "yamaha"),
    ),
    Leaf(
        "electronics.video.tv",
        ("tv", "television", "smart tv"),
        ("55 inch", "4k", "oled", "hdr"),
        ("lg", "samsung", "sony", "tcl"),
    ),
    Leaf(
        "electronics.camera.photo",
        ("camera", "digital camera", "mirrorless camera"),
        ("24mp", "4k video", "zoom lens", "full frame"),
        ("canon", "nikon", "sony", "fujifilm"),
    ),
    Leaf(
        "electronics.clocks",
        ("smartwatch", "watch", "fitness tracker"),
        ("heart rate", "gps", "waterproof", "amoled"),
        ("garmin", "apple", "huawei", "amazfit"),
    ),
    Leaf(
        "computers.notebook",
        ("laptop", "notebook", "ultrabook"),
        ("16gb ram", "ssd 512gb", "i7", "15.6 inch"),
        ("lenovo", "asus", "hp", "acer"),
    ),
    Leaf(
        "computers.desktop",
        ("desktop", "pc", "gaming pc"),
        ("ryzen 7", "32gb ram", "rtx", "1tb ssd"),
        ("hp", "dell", "lenovo"),
    ),
    Leaf(
        "computers.components.videocards",
        ("graphics card", "video card", "gpu"),
        ("8gb", "rtx", "ray tracing", "hdmi 2.1"),
        ("msi", "gigabyte", "asus", "palit"),
    ),
    Leaf(
        "computers.peripherals.printer",
        ("printer", "laser printer", "mfp"),
        ("duplex", "wifi", "color", "scanner"),
        ("hp", "canon", "epson", "brother"),
    ),
    Leaf(
        "appliances.kitchen.refrigerators",
        ("refrigerator", "fridge", "freezer"),
        ("no frost", "two door", "inverter", "a++"),
        ("lg", "samsung", "bosch", "indesit"),
    ),
    Leaf(
        "appliances.kitchen.washer",
        ("washing machine", "washer", "front loader"),
        ("8kg", "1400 rpm", "steam", "inverter"),
        ("lg", "bosch", "samsung", "indesit"),
    ),
    Leaf(
        "appliances.kitchen.coffee_machine",
        ("coffee machine", "espresso machine", "coffee maker"),
        ("milk frother", "capsule", "bean to cup", "grinder"),
        ("delonghi", "philips", "krups"),
    ),
    Leaf(
        "appliances.environment.vacuum",
        ("vacuum cleaner", "vacuum", "robot vacuum"),
        ("cordless", "cyclone", "hepa filter", "wet cleaning"),
        ("dyson", "xiaomi", "samsung", "philips"),
    ),
    Leaf(
        "appliances.environment.air_conditioner",
        ("air conditioner", "split system", "ac"),
        ("inverter", "12000 btu", "heating", "quiet"),
        ("lg", "daikin", "midea"),
    ),
    Leaf(
        "appliances.personal.hair_cutter",
        ("hair clipper", "trimmer", "shaver"),
        ("cordless", "waterproof", "titanium blades", "beard"),
        ("philips", "braun", "panasonic"),
    ),
    Leaf(
        "appliances.iron",
        ("iron", "steam iron", "garment steamer"),
        ("2400w", "ceramic soleplate", "vertical", "anti calc"),
        ("philips", "tefal", "braun"),
    ),
    Leaf(
        "apparel.shoes.sneakers",
        ("sneakers", "trainers", "running shoes"),
        ("size 42", "leather", "white", "breathable"),
        ("nike", "adidas", "puma", "new balance"),
    ),
    Leaf(
        "apparel.shoes.boots",
        ("boots", "winter boots", "ankle boots"),
        ("waterproof", "size 39", "suede", "fur lined"),
        ("timberland", "ecco", "dr martens"),
    ),
    Leaf(
        "apparel.jeans",
        ("jeans", "denim", "skinny jeans"),
        ("slim fit", "high waist", "stretch", "w32"),
        ("levis", "wrangler", "lee"),
    ),
    Leaf(
        "apparel.jacket",
        ("jacket", "coat", "parka"),
        ("down", "hooded", "windproof", "xl"),
        ("columbia", "the north face", "zara"),
    ),
    Leaf(
        "apparel.dress",
        ("dress", "summer dress", "evening dress"),
        ("cotton", "midi", "floral", "size m"),
        ("zara", "mango", "h&m"),
    ),
    Leaf(
        "furniture.living_room.sofa",
        ("sofa", "couch", "corner sofa"),
        ("fabric", "sleeper", "3 seater", "velvet"),
        ("ikea", "hoff", "askona"),
    ),
    Leaf(
        "furniture.bedroom.bed",
        ("bed", "double bed", "bed frame"),
        ("160x200", "storage", "orthopedic", "wooden"),
        ("ikea", "askona", "ormatek"),
    ),
    Leaf(
        "furniture.kitchen.table",
        ("kitchen table", "dining table", "table"),
        ("extendable", "oak", "round", "4 chairs"),
        ("ikea", "hoff"),
    ),
    Leaf(
        "kids.toys",
        ("toy", "lego set", "construction set"),
        ("age 6+", "500 pieces", "educational", "remote control"),
        ("lego", "hasbro", "mattel"),
    ),
    Leaf(
        "kids.carriage",
        ("stroller", "pram", "baby carriage"),
        ("2 in 1", "lightweight", "all terrain", "foldable"),
        ("cybex", "chicco", "peg perego"),
    ),
    Leaf(
        "sport.bicycle",
        ("bicycle", "bike", "mountain bike"),
        ("29 inch", "21 speed", "disc brakes", "aluminium frame"),
        ("trek", "giant", "merida", "stels"),
    ),
    Leaf(
        "sport.trainer",
        ("treadmill", "exercise bike", "elliptical trainer"),
        ("foldable", "120kg", "incline", "programs"),
        ("kettler", "torneo", "oxygen"),
    ),
    Leaf(
        "sport.tennis",
        ("tennis racket", "racket", "tennis balls"),
        ("graphite", "head size 100", "strung", "300g"),
        ("wilson", "babolat", "head"),
    ),
    Leaf(
        "beauty.skin_care",
        ("face cream", "moisturizer", "serum"),
        ("spf 30", "hyaluronic", "anti aging", "dry skin"),
        ("loreal", "nivea", "la roche posay"),
    ),
    Leaf(
        "beauty.fragrance",
        ("perfume", "eau de toilette", "fragrance"),
        ("50 ml", "floral", "woody", "long lasting"),
        ("chanel", "dior", "hugo boss"),
    ),
    Leaf(
        "auto.accessories.player",
        ("car stereo", "car player", "head unit"),
        ("bluetooth", "android auto", "2 din", "usb"),
        ("pioneer", "sony", "kenwood"),
    ),
    Leaf(
        "auto.accessories.videoregister",
        ("dash cam", "video recorder", "car camera"),
        ("full hd", "night vision", "gps", "wide angle"),
        ("xiaomi", "neoline", "mio"),
    ),
    Leaf(
        "construction.tools.drill",
        ("drill", "cordless drill", "hammer drill"),
        ("18v", "brushless", "2 batteries", "impact"),
        ("bosch", "makita", "dewalt"),
    ),
    Leaf(
        "country_yard.lawn_mower",
        ("lawn mower", "mower", "grass trimmer"),
        ("petrol", "electric", "self propelled", "42 cm"),
        ("husqvarna", "makita", "stihl"),
    ),
    Leaf(
        "accessories.bag",
        ("bag", "backpack", "handbag"),
        ("leather", "laptop compartment", "waterproof", "30l"),
        ("samsonite", "xiaomi", "michael kors"),
    ),
)

# Variants of a product kind when there are more categories than LEAVES, in order: category k is LEAVES[k % L]
# in variant k // L (a modifier, then a generation number past the modifiers). Siblings share their words.
MODIFIERS: tuple[str, ...] = (
    "",
    "kids",
    "pro",
    "mini",
    "outdoor",
    "premium",
    "compact",
    "smart",
    "classic",
    "travel",
    "budget",
    "xl",
)

# Search phrasings per session kind (tasks.sources.synthetic BROWSE, RESEARCH, BUY), 16 each: browsing is generic,
# research compares (brands, specs, "review", "vs", "price"), a buy session names the exact product.
PHRASINGS: tuple[tuple[str, ...], ...] = (
    (
        "{noun}",
        "{noun2}",
        "{noun} sale",
        "cheap {noun}",
        "{noun} deals",
        "new {noun}",
        "{brand}",
        "{noun} ideas",
        "{noun} gift",
        "nice {noun}",
        "{noun} online",
        "{noun2} discount",
        "{noun} shop",
        "popular {noun}",
        "{noun2} sale",
        "{noun} catalog",
    ),
    (
        "{brand} {noun} review",
        "{brand} vs {brand2}",
        "{brand} vs {brand2} {noun}",
        "best {noun}",
        "{noun} {spec}",
        "{noun} price",
        "{brand} {noun} specs",
        "{noun} comparison",
        "{noun} {spec} vs {spec2}",
        "{noun} {spec} review",
        "top 10 {noun}",
        "{brand} {noun} price",
        "which {noun} to buy",
        "{noun2} reviews",
        "{brand2} {noun} review",
        "{noun} {spec} price",
    ),
    (
        "{brand} {noun} {spec}",
        "buy {brand} {noun}",
        "{brand} {noun}",
        "{brand} {noun2} {spec}",
        "{brand} {noun} in stock",
        "order {brand} {noun}",
        "{brand} {noun} {spec} {spec2}",
        "buy {noun} {spec}",
        "{brand} {noun2}",
        "{brand} {noun} delivery",
        "{brand} {noun} {spec} buy",
        "{noun} {brand} {spec}",
        "{brand} {noun} black",
        "{brand} {noun} {spec2}",
        "buy {brand} {noun2}",
        "{brand} {noun} best price",
    ),
)


def category_leaf(k: int) -> tuple[Leaf, str, int]:
    """The product kind of category index ``k``, its modifier ("" for none) and its generation (0 for none)."""
    leaf = LEAVES[k % len(LEAVES)]
    variant = k // len(LEAVES)
    return leaf, MODIFIERS[variant % len(MODIFIERS)], variant // len(MODIFIERS)


def category_code(k: int) -> str:
    leaf, modifier, generation = category_leaf(k)
    return leaf.code + (f".{modifier}" if modifier else "") + (f".gen{generation + 1}" if generation else "")


def nouns(k: int) -> tuple[str, ...]:
    """What shoppers call category ``k``: its kind's nouns with its modifier and generation."""
    leaf, modifier, generation = category_leaf(k)
    return tuple(
        " ".join(w for w in (modifier, noun, f"gen {generation + 1}" if generation else "") if w) for noun in leaf.nouns
    )


def phrase(template: str, noun: str, noun2: str, brand: str, brand2: str, spec: str, spec2: str) -> str:
    return template.format(noun=noun, noun2=noun2, brand=brand, brand2=brand2, spec=spec, spec2=spec2)
