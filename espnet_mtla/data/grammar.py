"""The mini corpus' sentence grammars: English with phrase-aligned German, and SLU commands.

Sentences are drawn from a ``random.Random`` so a seed fixes the corpus. Phrases are
translated as whole units (articles and adjectives agree inside each German phrase), so
every English sentence has exactly one reference translation. ``hard_sentence`` (the text
condition of the MT recipe) adds subordinate clauses whose German verb goes to the end
(``because``/``weil``, ``when``/``wenn``: word order to learn) and coordinated sentences, and
``misspell`` puts typing errors into source words. ``homophones=True`` (the LM recipe's
condition) makes some objects one of a pair that espeak-ng says alike (``a pear``/``a pair``):
drawn at random in ``sentence``, chosen by the verb in ``structured_sentence``.
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
# Object pairs espeak-ng says alike ("a pear" and "a pair" are both a# p'e@): no acoustic model
# can tell them apart, context can. Not in OBJECTS, so that corpora without --homophones keep their draws.
HOMOPHONES = [
    (("a pear", "eine birne"), ("a pair", "ein paar")), (("the hare", "den hasen"), ("the hair", "das haar")),
    (("the knight", "den ritter"), ("the night", "die nacht")), (("the flour", "das mehl"), ("the flower", "die blume")),
    (("a tale", "eine geschichte"), ("a tail", "einen schwanz")), (("the plane", "das flugzeug"), ("the plain", "die ebene")),
]
HOMOPHONE_RATE = 0.3  # with homophones=True: a sentence's chance that its object is one of a pair
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


ADVERBIAL_RATE = 0.6  # a sentence's chance of ending in an adverbial, in both priors


def sentence(rng: random.Random, homophones: bool = False) -> Sentence:
    """subject verb object [adverbial], every slot drawn uniformly (so is a homophone's spelling)."""
    subject, verb = rng.choice(SUBJECTS), rng.choice(VERBS)
    homophone = homophones and rng.random() < HOMOPHONE_RATE
    parts = [subject, verb, rng.choice(rng.choice(HOMOPHONES)) if homophone else rng.choice(OBJECTS)]
    if rng.random() < ADVERBIAL_RATE:
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


# The structured text prior (``--text_prior structured``): the same phrases as ``sentence``, but
# each word depends on the words before it, and subjects have skewed frequencies, as real text
# has. Every subject prefers 3 verbs, every (subject, verb) pair 2 objects, every object 2
# adverbials (a fixed table, part of the corpus like the phrase lists); a slot takes a preferred
# phrase with probability PREFERRED, else any phrase (so an LM that insists on its preference is
# wrong 5% of the time). The object table has 120 rows: 2000 transcripts show each row ~17
# times, a language model's 50,000 sentences ~400 times. Subjects are drawn with Zipf weights.
PREFERRED = 0.95
SUBJECT_WEIGHTS = [1.0 / rank for rank in range(1, len(SUBJECTS) + 1)]  # Zipf


class Preferences(NamedTuple):
    verbs: dict  # subject pair -> preferred verb pairs
    objects: dict  # (subject, verb) -> preferred object pairs
    adverbials: dict  # object -> preferred adverbial pairs
    spellings: dict  # (verb, homophone pair) -> the pair's phrase that verb takes


def _preferences() -> Preferences:
    rng = random.Random("mini_synth structured prior")  # fixed: the same table for every corpus seed
    verbs = {s: tuple(rng.sample(VERBS, 3)) for s in SUBJECTS}
    objects = {(s, v): tuple(rng.sample(OBJECTS, 2)) for s in SUBJECTS for v in VERBS}
    adverbials = {o: tuple(rng.sample(ADVERBIALS, 2)) for o in OBJECTS}
    spellings = {}
    for pair in HOMOPHONES:  # half of the verbs take each spelling, so neither is right by default
        for rank, verb in enumerate(rng.sample(VERBS, len(VERBS))):
            spellings[verb, pair] = pair[rank % 2]
    return Preferences(verbs, objects, adverbials, spellings)


PREFERENCES = _preferences()


def structured_sentence(rng: random.Random, homophones: bool = False) -> Sentence:
    """subject verb object [adverbial], as ``sentence``, each slot conditioned on the ones before;
    a homophone object (``homophones=True``) takes the spelling its verb prefers."""
    def pick(preferred, everything):
        return rng.choice(preferred) if rng.random() < PREFERRED else rng.choice(everything)

    subject = rng.choices(SUBJECTS, weights=SUBJECT_WEIGHTS)[0]
    verb = pick(PREFERENCES.verbs[subject], VERBS)
    if homophones and rng.random() < HOMOPHONE_RATE:
        pair = rng.choice(HOMOPHONES)
        obj = pick((PREFERENCES.spellings[verb, pair],), pair)
    else:
        obj = pick(PREFERENCES.objects[subject, verb], OBJECTS)
    parts = [subject, verb, obj]
    if rng.random() < ADVERBIAL_RATE:
        parts.append(pick(PREFERENCES.adverbials.get(obj, ADVERBIALS), ADVERBIALS))
    return Sentence(" ".join(en for en, _ in parts), " ".join(de for _, de in parts))
