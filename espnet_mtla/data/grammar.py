"""The mini corpus' sentence grammars: English with phrase-aligned German, and SLU commands.

Sentences are drawn from a ``random.Random`` so a seed fixes the corpus. Phrases are
translated as whole units (articles and adjectives agree inside each German phrase), so
every English sentence has exactly one reference translation. ``hard_sentence`` (the text
condition of the MT recipe) adds subordinate clauses whose German verb goes to the end
(``because``/``weil``, ``when``/``wenn``: word order to learn) and coordinated sentences, and
``misspell`` puts typing errors into source words.
"""

import random
from typing import NamedTuple, Tuple

# (English, German) phrase pairs.
SUBJECTS = [
    ("the cat", "die katze"), ("my brother", "mein bruder"), ("a small dog", "ein kleiner hund"),
    ("the old man", "der alte mann"), ("our teacher", "unser lehrer"), ("the young girl", "das junge mädchen"),
    ("her sister", "ihre schwester"), ("the farmer", "der bauer"), ("a tall woman", "eine große frau"),
    ("the doctor", "der arzt"), ("his friend", "sein freund"), ("the little boy", "der kleine junge"),
]
VERBS = [
    ("sees", "sieht"), ("likes", "mag"), ("finds", "findet"), ("buys", "kauft"), ("paints", "malt"),
    ("carries", "trägt"), ("cleans", "putzt"), ("opens", "öffnet"), ("sells", "verkauft"), ("needs", "braucht"),
]
OBJECTS = [
    ("the red ball", "den roten ball"), ("a green apple", "einen grünen apfel"), ("the big house", "das große haus"),
    ("the blue car", "das blaue auto"), ("a new book", "ein neues buch"), ("the small box", "die kleine kiste"),
    ("an old chair", "einen alten stuhl"), ("the white door", "die weiße tür"), ("a warm coat", "einen warmen mantel"),
    ("the yellow bag", "die gelbe tasche"), ("a wooden table", "einen hölzernen tisch"), ("the black hat", "den schwarzen hut"),
]
ADVERBIALS = [
    ("today", "heute"), ("in the morning", "am morgen"), ("at home", "zu hause"), ("every day", "jeden tag"),
    ("again", "wieder"), ("in the evening", "am abend"), ("after school", "nach der schule"), ("on sunday", "am sonntag"),
]

# SLU: intent -> templates; slots in braces are filled from SLOTS.
INTENTS = {
    "alarm_set": ["wake me up at {time}", "set an alarm for {time}", "please set my alarm to {time}"],
    "alarm_remove": ["cancel my alarm for {time}", "remove the alarm at {time}", "delete the {time} alarm"],
    "weather_query": ["what is the weather like {day}", "will it rain {day}", "how cold will it be {day}"],
    "play_music": ["play some {genre} music", "put on {genre} songs", "i want to hear {genre}"],
    "calendar_set": ["remind me to {task} {day}", "add {task} to my calendar {day}", "schedule {task} {day}"],
    "iot_hue_lightoff": ["turn off the lights in the {room}", "switch the {room} lights off", "lights off in the {room}"],
    "iot_hue_lighton": ["turn on the lights in the {room}", "switch the {room} lights on", "lights on in the {room}"],
    "takeaway_order": ["order a {food} for {time}", "get me a {food} delivered", "i would like to order a {food}"],
}
SLOTS = {
    "time": ["seven am", "six thirty", "noon", "eight in the evening", "half past nine", "five pm", "midnight"],
    "day": ["today", "tomorrow", "on monday", "this weekend", "on friday", "next week"],
    "genre": ["jazz", "rock", "classical", "pop", "country", "blues"],
    "task": ["call mom", "buy milk", "pay the rent", "water the plants", "book a flight", "visit the dentist"],
    "room": ["kitchen", "bedroom", "living room", "office", "garage", "bathroom"],
    "food": ["pizza", "curry", "burger", "salad", "sushi", "sandwich"],
}


class Sentence(NamedTuple):
    english: str
    german: str


class Command(NamedTuple):
    intent: str
    transcript: str


def sentence(rng: random.Random) -> Sentence:
    parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
    if rng.random() < 0.6:
        parts.append(rng.choice(ADVERBIALS))
    return Sentence(" ".join(en for en, _ in parts), " ".join(de for _, de in parts))


# Subordinating conjunctions: the German clause puts its verb last ("weil der bauer den hut kauft").
SUBORDINATORS = [("because", "weil"), ("when", "wenn"), ("although", "obwohl")]


def hard_sentence(rng: random.Random) -> Sentence:
    """A sentence, then with probability 0.5 a subordinate clause (verb-final in German), or with
    probability 0.25 a second sentence joined by "and"/"und": longer, with reordering."""
    first = sentence(rng)
    draw = rng.random()
    if draw < 0.5:
        (en_conj, de_conj), subject, verb, obj = (rng.choice(SUBORDINATORS), rng.choice(SUBJECTS), rng.choice(VERBS),
                                                 rng.choice(OBJECTS))
        return Sentence(f"{first.english} {en_conj} {subject[0]} {verb[0]} {obj[0]}",
                        f"{first.german} {de_conj} {subject[1]} {obj[1]} {verb[1]}")
    if draw < 0.75:
        second = sentence(rng)
        return Sentence(f"{first.english} and {second.english}", f"{first.german} und {second.german}")
    return first


def misspell(text: str, rng: random.Random, rate: float = 0.1) -> str:
    """Each word of three letters or more, with probability ``rate``: a letter dropped, two
    adjacent letters swapped, or a letter doubled (noisy source text)."""
    words = text.split()
    for i, word in enumerate(words):
        if len(word) >= 3 and rng.random() < rate:
            k = rng.randrange(len(word) - 1)
            kind = rng.randrange(3)
            words[i] = (word[:k] + word[k + 1:] if kind == 0 else
                        word[:k] + word[k + 1] + word[k] + word[k + 2:] if kind == 1 else
                        word[:k + 1] + word[k:])
    return " ".join(words)


def command(rng: random.Random) -> Command:
    intent = rng.choice(sorted(INTENTS))
    template = rng.choice(INTENTS[intent])
    slots = {name: rng.choice(values) for name, values in SLOTS.items() if "{" + name + "}" in template}
    return Command(intent, template.format(**slots))


def intent_names() -> Tuple[str, ...]:
    return tuple(sorted(INTENTS))


# The topical text prior (``--text_prior topical``): English sentences whose words depend on each
# other, with skewed frequencies, as real text has; what an LM trained on much more text than the
# transcripts can learn and an acoustic model trained on the transcripts sees too rarely. Each
# sentence is about one topic; topics, and the words inside a topic, are drawn with Zipf weights
# (1/rank), so a rare topic's words turn up a few dozen times in 2000 transcripts and hundreds of
# times in an LM's text. A slot leaves its topic with probability OFF_TOPIC, so context narrows
# the choice without fixing it.
class Topic(NamedTuple):
    subjects: Tuple[str, ...]
    verbs: Tuple[str, ...]
    objects: Tuple[str, ...]
    places: Tuple[str, ...]


def _topic(subjects: str, verbs: str, objects: str, places: str) -> Topic:
    return Topic(*(tuple(words.split(", ")) for words in (subjects, verbs, objects, places)))


TOPICS = (  # most frequent first
    _topic("the cook, the baker, my mother", "stirs, bakes, slices, tastes",
           "the soup, the bread, a fresh loaf, the onions, a hot pie", "in the kitchen, at the bakery"),
    _topic("the farmer, the shepherd, a farmhand", "feeds, milks, herds, counts",
           "the cows, the sheep, the goats, a brown horse, the chickens", "in the barn, on the farm"),
    _topic("the teacher, a student, the pupils", "reads, writes, corrects, studies",
           "the lesson, a long essay, the textbook, the homework, the spelling test", "in the classroom, at school"),
    _topic("the nurse, the surgeon, a doctor", "examines, treats, bandages, checks",
           "the patient, a broken arm, the wound, the fever, a sore throat", "at the hospital, in the clinic"),
    _topic("the gardener, my grandmother, a neighbour", "plants, waters, prunes, picks",
           "the roses, the tulips, a young tree, the hedge, the vegetables", "in the garden, behind the house"),
    _topic("the carpenter, a builder, the plumber", "saws, hammers, repairs, measures",
           "the plank, a wooden shelf, the pipes, the roof, a broken window", "in the workshop, on the site"),
    _topic("the pianist, a singer, the drummer", "plays, tunes, practises, records",
           "the piano, a guitar, the violin, the drums, a slow song", "on the stage, at the concert"),
    _topic("the sailor, a fisherman, the captain", "steers, anchors, paints, mends",
           "the boat, a fishing net, the sails, the rope, a small ship", "at the harbour, on the sea"),
    _topic("the striker, a goalkeeper, the coach", "kicks, catches, passes, blocks",
           "the ball, a penalty, the free kick, the corner, a long pass", "on the pitch, at the stadium"),
    _topic("the librarian, a reader, the writer", "borrows, returns, shelves, reads",
           "the novel, a magazine, the atlas, the dictionary, a poem", "in the library, at the bookshop"),
    _topic("the manager, a clerk, the secretary", "types, signs, files, prints",
           "the letter, a contract, the report, the invoice, the budget", "at the office, at the desk"),
    _topic("the officer, a detective, the judge", "arrests, questions, follows, releases",
           "the thief, a suspect, the witness, the robber, the driver", "at the station, in court"),
    _topic("the pilot, a tourist, the traveller", "flies, books, boards, misses",
           "the plane, a ticket, the train, the ferry, a taxi", "at the airport, on holiday"),
    _topic("the grocer, a customer, the vendor", "weighs, sells, packs, buys",
           "the cheese, a melon, the carrots, the eggs, a bag of rice", "at the market, in the shop"),
    _topic("the painter, an artist, the sculptor", "paints, draws, carves, sketches",
           "a portrait, the statue, a landscape, the canvas, the marble", "in the studio, at the gallery"),
    _topic("the chemist, a scientist, the professor", "measures, mixes, tests, heats",
           "the sample, a liquid, the crystals, the powder, the solution", "in the laboratory, at the university"),
    _topic("the mechanic, the engineer, my uncle", "fixes, washes, drives, tows",
           "the engine, a truck, the tyres, the brakes, a motorbike", "in the garage, on the road"),
    _topic("the keeper, a vet, the children", "feeds, watches, photographs, visits",
           "the lion, a giraffe, the monkeys, the elephant, the penguins", "at the zoo, in the park"),
    _topic("the hiker, a climber, the scouts", "climbs, crosses, explores, maps",
           "the mountain, a river, the forest, the valley, a glacier", "in the hills, at dawn"),
    _topic("the waiter, a chef, the guests", "serves, orders, tastes, brings",
           "the wine, a salad, the dessert, the steak, the menu", "at the restaurant, at dinner"),
    _topic("the programmer, a hacker, the analyst", "codes, debugs, installs, deletes",
           "the software, a laptop, the server, the database, the printer", "at the office, at night"),
    _topic("the tailor, a dressmaker, my aunt", "sews, stitches, irons, folds",
           "the shirt, a dress, the jacket, the trousers, the scarf", "in the shop, at home"),
    _topic("the postman, a courier, the clerk", "delivers, sorts, sends, stamps",
           "the parcel, a postcard, the mail, the package, a telegram", "at the post office, in the van"),
    _topic("the priest, a bride, the groom", "greets, blesses, thanks, invites",
           "the couple, the guests, a choir, the family, the bridesmaids", "at the wedding, in the church"),
)
OFF_TOPIC = 0.1  # a slot's chance of a word from another topic
PLACE_RATE = 0.6  # a sentence's chance of ending in a place


def zipf_choice(rng: random.Random, items):
    """One of ``items``, the k-th (from 1) with weight 1/k."""
    return rng.choices(items, weights=[1.0 / k for k in range(1, len(items) + 1)])[0]


def topical_sentence(rng: random.Random) -> str:
    """subject verb object [place], each word from the sentence's topic (Zipf-weighted) except
    with probability OFF_TOPIC, when it comes from a uniformly drawn other topic."""
    topic = zipf_choice(rng, TOPICS)

    def word(slot: str) -> str:
        source = rng.choice(TOPICS) if rng.random() < OFF_TOPIC else topic
        return zipf_choice(rng, getattr(source, slot))

    words = [word("subjects"), word("verbs"), word("objects")]
    if rng.random() < PLACE_RATE:
        words.append(word("places"))
    return " ".join(words)
