"""Write the small datasets the examples ship with (run it again to get the same files).

Training sets are generated from templates with a fixed seed; test sets and streams use
templates or sentences written separately, so a function is never scored on the phrasings it
was trained on. Everything here is invented for the examples: the shop, the companies, the
books and the news.

    python examples/data/make_data.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).parent


def write(name: str, header: list[str], rows: list[tuple]) -> None:
    with open(HERE / name, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(header)
        out.writerows(rows)
    print(f"{name}: {len(rows)} rows")


def fill(rng: random.Random, templates: list[str], slots: dict[str, list[str]], n: int,
         label: str) -> list[tuple[str, str]]:
    """`n` distinct texts from `templates` with random slot values, labelled `label`."""
    seen: set[str] = set()
    for _ in range(n * 50):
        if len(seen) == n:
            break
        text = rng.choice(templates)
        for key, values in slots.items():
            text = text.replace("{" + key + "}", rng.choice(values), 1)
        seen.add(text[0].upper() + text[1:])
    return [(text, label) for text in sorted(seen)]


# --- 1. customer service: intents, FAQ ---------------------------------------------------

SHOP_SLOTS = {
    "num": [str(n) for n in range(40100, 40999, 37)],
    "item": ["jacket", "rain jacket", "tent", "backpack", "pair of boots", "sleeping bag",
             "fleece", "hoodie", "pair of trousers", "head torch", "water bottle", "beanie"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the weekend"],
    "days": ["three", "four", "five", "ten"],
    "when": ["yesterday", "this morning", "an hour ago", "last night"],
    "amount": ["£45", "£120", "£89.99", "£12"],
    "code": ["SPRING10", "WELCOME15", "TRAIL20"],
    "country": ["France", "Germany", "Ireland", "Spain", "the US", "Norway", "Italy"],
    "material": ["merino", "down", "fleece", "waxed cotton"],
    "hi": ["", "Hi, ", "Hello, ", "Hey, ", "Good morning, "],
}

INTENT_TEMPLATES = {
    "order_status": [
        "{hi}where is my order {num}?", "{hi}has my {item} shipped yet?",
        "{hi}my parcel hasn't arrived, order {num}", "when will my {item} be delivered?",
        "tracking for order {num} hasn't updated in {days} days",
        "{hi}I ordered a {item} on {day} and it still hasn't come",
        "what's the delivery status of my {item}?", "{hi}is order {num} on its way?",
        "can you check where my {item} is?", "my order {num} says dispatched but nothing arrived",
    ],
    "cancel_order": [
        "{hi}please cancel my order {num}", "I want to cancel the {item} I ordered {when}",
        "cancel order {num}, I picked the wrong size",
        "{hi}can I still cancel my order from {day}?", "stop order {num} before it ships",
        "I changed my mind about the {item}, cancel it please",
        "{hi}I need to cancel an order I placed {when}", "how do I cancel order {num}?",
        "please don't send the {item}, I want to cancel",
    ],
    "return_item": [
        "{hi}how do I return a {item}?", "the {item} doesn't fit, I want to send it back",
        "I'd like a refund for the {item} I received",
        "{hi}the {item} arrived damaged, can I return it?",
        "send me a return label for order {num}", "I want to exchange my {item} for a bigger size",
        "{hi}can I get my money back for the {item}?", "the {item} is faulty, I want a refund",
        "how many days do I have to return the {item}?",
    ],
    "payment_problem": [
        "{hi}my card was declined when paying for the {item}",
        "I was charged twice for order {num}", "{hi}payment failed at checkout",
        "why was I charged {amount} when the order was cancelled?",
        "the discount code {code} didn't apply to my payment",
        "PayPal keeps failing when I buy the {item}",
        "{hi}I paid {amount} but the order shows as unpaid",
        "there's an extra charge of {amount} on my card",
        "my refund of {amount} never reached my card",
    ],
    "account_access": [
        "{hi}I can't log in to my account", "forgot my password, how do I reset it?",
        "{hi}my account is locked after too many attempts", "I never got the verification email",
        "how do I change the email address on my account?",
        "{hi}the login page says my password is wrong but it isn't",
        "the password reset email never arrives", "I can't sign in since {day}",
        "{hi}how do I delete my account?",
    ],
    "general_question": [
        "{hi}do you ship to {country}?", "what are your opening hours on {day}?",
        "{hi}do you offer student discounts?", "how long does standard delivery take?",
        "are your jackets waterproof?", "{hi}do you sell gift cards?",
        "what payment methods do you accept?", "how do I wash a {material} {item}?",
        "{hi}do you have a size guide?", "is there a warranty on the {item}?",
        "do you match prices from other shops?", "{hi}can I pick up in store?",
        "how much is delivery to {country}?", "do you repair a damaged {item}?",
    ],
}

INTENT_TEST = [
    ("Any news on when my boots get here?", "order_status"),
    ("It's been a week and my package is still not here", "order_status"),
    ("Track my shipment please", "order_status"),
    ("The courier says delivered but I have nothing", "order_status"),
    ("When will order 88213 arrive?", "order_status"),
    ("I no longer need the tent I bought yesterday, please cancel", "cancel_order"),
    ("Is it too late to call off my purchase?", "cancel_order"),
    ("Cancel everything I ordered this morning", "cancel_order"),
    ("Please don't ship order 55102, I want to cancel it", "cancel_order"),
    ("How can I cancel a purchase I just made?", "cancel_order"),
    ("These trousers are too small, how do I send them back?", "return_item"),
    ("I want my money back for the broken lamp", "return_item"),
    ("Can I swap the shirt for a medium?", "return_item"),
    ("What's your process for returning items?", "return_item"),
    ("The zip on my jacket broke after one day, I want to return it", "return_item"),
    ("Checkout keeps rejecting my Visa", "payment_problem"),
    ("I see two identical charges on my bank statement", "payment_problem"),
    ("My voucher wasn't taken off the total I paid", "payment_problem"),
    ("Apple Pay won't go through", "payment_problem"),
    ("You took my money but the order shows unpaid", "payment_problem"),
    ("I'm locked out of my profile", "account_access"),
    ("The password reset link doesn't work", "account_access"),
    ("Can't sign in on the app", "account_access"),
    ("I need to update the email I log in with", "account_access"),
    ("The two-factor code never arrives", "account_access"),
    ("Do you deliver to Canada?", "general_question"),
    ("Are you open on Sundays?", "general_question"),
    ("Is there a discount for students?", "general_question"),
    ("Can I buy a voucher for a friend?", "general_question"),
    ("Will the waterproof jacket keep me dry in heavy rain?", "general_question"),
]

FAQ = [
    ("shipping_countries", "Which countries do you ship to?",
     "We ship to the UK, every EU country, Norway, Switzerland, the US and Canada."),
    ("delivery_time", "How long does delivery take?",
     "Standard delivery takes 3-5 working days; express delivery takes 1-2 working days."),
    ("delivery_cost", "How much does shipping cost?",
     "Delivery is free on orders over £50; otherwise it costs £4.95 in the UK and £9.95 abroad."),
    ("opening_hours", "When are your stores open?",
     "Our stores open Monday to Saturday 9:00-18:00 and Sunday 11:00-16:00."),
    ("student_discount", "Do you offer a student discount?",
     "Yes: 10% off full-price items with a valid student card, online and in store."),
    ("gift_cards", "Do you sell gift cards?",
     "Yes, gift cards from £10 to £250, as an e-mail voucher or a plastic card; valid 2 years."),
    ("payment_methods", "What payment methods do you accept?",
     "Visa, Mastercard, American Express, PayPal, Apple Pay, Google Pay and our gift cards."),
    ("size_guide", "Where can I find your size guide?",
     "Every product page links to its size guide, with measurements in cm and inches."),
    ("waterproof", "Are your jackets waterproof?",
     "Jackets in the Storm range are fully waterproof (20,000 mm); the others are "
     "water-resistant."),
    ("wool_care", "How do I wash merino wool?",
     "Wash merino at 30°C on a wool cycle with a wool detergent, and dry it flat."),
    ("warranty", "Is there a warranty on tents and backpacks?",
     "Tents, backpacks and sleeping bags have a two-year warranty against manufacturing faults."),
    ("price_match", "Do you price match?",
     "We match the price of an identical item in stock at a UK retailer; ask in store or by chat."),
    ("click_collect", "Can I collect my order in store?",
     "Yes, choose Click & Collect at checkout; your order is ready in 2 hours at most stores."),
    ("loyalty", "How does the loyalty programme work?",
     "Members earn 1 point per £1 spent; 100 points give a £5 voucher. Joining is free."),
    ("repairs", "Do you repair gear?",
     "Our repair service fixes zips, seams and tent poles; bring the item to any store."),
    ("return_policy", "What is your returns policy?",
     "Unused items can be returned within 30 days for a full refund; returns by post are free."),
]

FAQ_CALIBRATION = [
    ("Do you deliver to Germany?", "shipping_countries"),
    ("Can I order from Canada?", "shipping_countries"),
    ("How many days until my parcel arrives with standard shipping?", "delivery_time"),
    ("How fast is express delivery?", "delivery_time"),
    ("Is delivery free?", "delivery_cost"),
    ("What do you charge for postage abroad?", "delivery_cost"),
    ("What time does the shop close on Saturday?", "opening_hours"),
    ("Are your stores open on Sunday?", "opening_hours"),
    ("Is there a discount for students?", "student_discount"),
    ("Can I use my student card for money off?", "student_discount"),
    ("Can I buy a voucher as a present?", "gift_cards"),
    ("How long is a gift card valid?", "gift_cards"),
    ("Can I pay with PayPal?", "payment_methods"),
    ("Do you take American Express?", "payment_methods"),
    ("How do I know which size to order?", "size_guide"),
    ("Do you have measurements for your trousers?", "size_guide"),
    ("Will this coat keep me dry in heavy rain?", "waterproof"),
    ("Are the jackets water-resistant or waterproof?", "waterproof"),
    ("Can I put my wool jumper in the washing machine?", "wool_care"),
    ("What temperature should I wash merino at?", "wool_care"),
    ("What guarantee do I get on a tent?", "warranty"),
    ("My backpack strap broke after a year, is it covered?", "warranty"),
    ("Will you match a cheaper price I found elsewhere?", "price_match"),
    ("Another shop sells this for less, can you do the same price?", "price_match"),
    ("Can I pick up my online order at a shop?", "click_collect"),
    ("How does click and collect work?", "click_collect"),
    ("How do I earn points?", "loyalty"),
    ("Is there a rewards scheme?", "loyalty"),
    ("Can you fix a broken zip?", "repairs"),
    ("Do you mend tents?", "repairs"),
    ("How long do I have to return something?", "return_policy"),
    ("Are returns free?", "return_policy"),
    ("Can I bring my dog into the store?", ""),
    ("What's the weather like in Edinburgh tomorrow?", ""),
    ("Do you sell bicycles?", ""),
    ("Who founded the company?", ""),
    ("Are you hiring?", ""),
    ("Can you recommend a good hiking trail?", ""),
    ("Is there parking at the store?", ""),
    ("Do you do corporate orders?", ""),
    ("What is the capital of Peru?", ""),
    ("Tell me a joke", ""),
]

FAQ_TEST = [
    ("Do you send orders to Switzerland?", "shipping_countries"),
    ("When will my order get to me if I pick standard delivery?", "delivery_time"),
    ("How much is postage in the UK?", "delivery_cost"),
    ("What are your Sunday opening times?", "opening_hours"),
    ("Do students get money off?", "student_discount"),
    ("Do you have gift vouchers?", "gift_cards"),
    ("Which cards do you accept?", "payment_methods"),
    ("Is there a sizing chart?", "size_guide"),
    ("Is the Storm jacket waterproof?", "waterproof"),
    ("How should I clean merino clothes?", "wool_care"),
    ("How long is the warranty on a sleeping bag?", "warranty"),
    ("Do you match competitors' prices?", "price_match"),
    ("Can I collect online orders in a shop?", "click_collect"),
    ("How do loyalty points work?", "loyalty"),
    ("Can you repair my tent pole?", "repairs"),
    ("Can I return an item I haven't used?", "return_policy"),
    ("Do you have a cafe in the store?", ""),
    ("Can I book a guided climbing trip with you?", ""),
    ("What's your phone number in Australia?", ""),
    ("Do you sell fishing licences?", ""),
    ("Who is your CEO?", ""),
    ("Will it snow at the weekend?", ""),
]


def customer_service(rng: random.Random) -> None:
    rows = [row for label, templates in INTENT_TEMPLATES.items()
            for row in fill(rng, templates, SHOP_SLOTS, 30, label)]
    rng.shuffle(rows)
    write("intents.csv", ["text", "label"], rows)
    write("intents_test.csv", ["text", "label"], INTENT_TEST)
    write("faq.csv", ["id", "question", "answer"], FAQ)
    write("faq_calibration.csv", ["text", "id"], FAQ_CALIBRATION)
    write("faq_test.csv", ["text", "id"], FAQ_TEST)


# --- 2. financial news: headlines and a stream --------------------------------------------

COMPANIES = ["Altona Energy", "Brightwell Bank", "Corvane Pharma", "Delmar Motors",
             "Eastgate Retail", "Fenwick Airlines", "Glenrock Mining", "Harlow Telecom",
             "Kestrel Logistics", "Lumora Chips", "Marlow Insurance", "Northbay Chemicals",
             "Orchid Hotels", "Pellam Steel", "Quarry Foods", "Rivenhall Media"]
NEWS_SLOTS = {
    "co": COMPANIES,
    "pct": ["4%", "7%", "12%", "18%", "25%"],
    "n": ["300", "1,200", "2,500", "5,000"],
    "amount": ["$40m", "$250m", "$1.2bn", "£80m"],
    "partner": ["the US Navy", "a Gulf airline", "a European utility", "a Chinese carmaker"],
    "issue": ["emissions data", "price fixing", "a data breach", "safety failures"],
    "day": ["Tuesday", "Thursday", "March 14", "next week"],
    "month": ["May", "June", "September"],
    "city": ["Frankfurt", "Dublin", "Singapore", "Toronto"],
    "name": ["Maria Keller", "David Osei", "Priya Raman", "Tom Hargreaves"],
    "dept": ["investor relations", "its Asian business", "research", "digital sales"],
    "segment": ["online", "overseas", "premium", "wholesale"],
    "quarter": ["the first quarter", "the third quarter", "the second half"],
    "exchange": ["New York", "London", "Amsterdam"],
    "topic": ["executive pay", "a share buyback", "a new board"],
}
TRAIN_NEWS = {
    "positive": [
        "{co} shares jump after profit beats forecasts", "{co} raises full-year guidance",
        "{co} wins {amount} contract with {partner}", "{co} posts record quarterly revenue",
        "{co} upgraded to buy by analysts", "{co} lifts dividend by {pct}",
        "{co} stock hits all-time high", "{co} sales surge {pct} on strong demand",
    ],
    "negative": [
        "{co} shares slump after profit warning", "{co} to cut {n} jobs",
        "{co} misses revenue estimates", "{co} faces regulatory probe over {issue}",
        "{co} recalls {n} products over {issue}", "{co} downgraded to sell by analysts",
        "{co} reports surprise loss", "{co} suspends dividend",
        "{co} chief executive quits amid accounting scandal",
    ],
    "neutral": [
        "{co} to report results on {day}", "{co} appoints {name} as finance chief",
        "{co} annual meeting set for {month}", "{co} moves headquarters to {city}",
        "{co} shares flat ahead of earnings", "{co} announces board changes",
        "{co} to present at industry conference in {city}", "{co} names new head of {dept}",
    ],
}
STREAM_NEWS = {
    "positive": [
        "{co} beats expectations as {segment} sales climb", "Investors cheer {co}'s strong quarter",
        "{co} lifts outlook after robust demand", "{co} secures major order from {partner}",
        "{co} rallies {pct} on upbeat results", "{co} profit doubles in {quarter}",
    ],
    "negative": [
        "{co} tumbles as demand weakens", "{co} issues profit warning, shares sink",
        "{co} hit by lawsuit over {issue}", "{co} plans to shut factories and cut {n} staff",
        "{co} slashes forecast amid falling orders", "Regulators fine {co} {amount} over {issue}",
        "{co} losses widen in {quarter}", "{co} shares plunge {pct} as sales collapse",
    ],
    "neutral": [
        "{co} schedules earnings call for {day}", "{co} hires {name} to lead {dept}",
        "{co} publishes annual sustainability report", "{co} moves listing to {exchange}",
        "{co} holds shareholder vote on {topic}", "{co} opens new office in {city}",
    ],
}


def stream_label(rng: random.Random, hour: int) -> str:
    """About 12% negative news, except in a sell-off at 14:00-15:59 (about 60%); the rest
    half positive, half neutral."""
    negative = 0.6 if hour in (14, 15) else 0.12
    draw = rng.random()
    if draw < negative:
        return "negative"
    return "positive" if draw < (1 + negative) / 2 else "neutral"


def financial_news(rng: random.Random) -> None:
    rows = [row for label, templates in TRAIN_NEWS.items()
            for row in fill(rng, templates, NEWS_SLOTS, 50, label)]
    rng.shuffle(rows)
    write("headlines.csv", ["text", "label"], rows)
    stream = []
    for hour in range(9, 21):
        for minute in sorted(rng.sample(range(60), 20)):
            label = stream_label(rng, hour)
            text = fill(rng, STREAM_NEWS[label], NEWS_SLOTS, 1, label)[0][0]
            stream.append((f"2024-03-04 {hour:02d}:{minute:02d}", text, label))
    write("headline_stream.csv", ["time", "text", "label"], stream)


# --- 3. recommendation: books, and readers in their own words -----------------------------

BOOKS = {  # category: [(title, description, level)]
    "cooking": [
        ("Cooking Without Fear", "Your first kitchen skills: boiling, roasting and ten simple "
         "dinners anyone can make.", "beginner"),
        ("The Weeknight Vegetarian", "Quick, easy meat-free dinners from a handful of "
         "ingredients, no experience needed.", "beginner"),
        ("Bread for Beginners", "Bake your first loaf: a gentle introduction to yeast, kneading "
         "and proving.", "beginner"),
        ("Flour and Fire", "Sourdough hydration, levain schedules and wood-fired baking for "
         "experienced bakers.", "advanced"),
        ("The Professional Kitchen", "Restaurant technique: classical sauces, butchery and "
         "plating for serious cooks.", "advanced"),
    ],
    "outdoors": [
        ("Your First Hike", "Choosing boots, packing a day bag and easy walks for people new "
         "to hiking.", "beginner"),
        ("Camping Made Easy", "Pitching a tent, campsite cooking and a first night outdoors "
         "with the family.", "beginner"),
        ("Map Reading Basics", "Learn to read a map and use a compass on simple countryside "
         "walks.", "beginner"),
        ("Above the Tree Line", "Technical scrambling, winter mountaineering and route finding "
         "on serious terrain.", "advanced"),
        ("The Long Trail", "A multi-month thru-hike: resupply, ultralight gear and crossing "
         "remote ranges alone.", "advanced"),
    ],
    "programming": [
        ("Python from Scratch", "Learn to program with Python: variables, loops and functions, "
         "no experience needed.", "beginner"),
        ("Your First Website", "Build a simple web page with HTML, CSS and a little "
         "JavaScript.", "beginner"),
        ("Think Like a Coder", "A gentle introduction to solving problems step by step with "
         "code.", "beginner"),
        ("Designing Data Systems", "Replication, partitioning and consistency in large "
         "distributed databases.", "advanced"),
        ("The Rust Handbook", "Systems programming for experienced developers: ownership, "
         "lifetimes and lock-free concurrency.", "advanced"),
    ],
    "history": [
        ("The World in Ten Stories", "An easy first tour of world history, from the pyramids "
         "to the moon landing.", "beginner"),
        ("Castles for Curious Minds", "An illustrated introduction to medieval castles and the "
         "people who lived in them.", "beginner"),
        ("Rome at a Glance", "A short, readable introduction to the Roman Empire for "
         "newcomers.", "beginner"),
        ("The Silk Road Empires", "A scholarly study of Eurasian trade networks, with primary "
         "sources and historiography.", "advanced"),
        ("The Cold War Files", "Archival research on Soviet and American intelligence for "
         "serious readers of history.", "advanced"),
    ],
    "finance": [
        ("Money Basics", "Budgeting, saving and your first bank account explained in plain "
         "language.", "beginner"),
        ("Budget Like a Pro", "Track your spending and build an emergency fund, starting from "
         "zero.", "beginner"),
        ("Investing for Beginners", "What shares and index funds are, and how to start with "
         "small amounts.", "beginner"),
        ("Options and Derivatives", "Pricing models, hedging and volatility trading for "
         "experienced investors.", "advanced"),
        ("Advanced Portfolio Theory", "Factor models, asset allocation and risk budgeting for "
         "seasoned investors.", "advanced"),
    ],
    "gardening": [
        ("Grow Your First Vegetables", "Easy crops for new gardeners: salad, beans and "
         "tomatoes in pots.", "beginner"),
        ("Houseplants 101", "Keeping your first indoor plants alive: light, water and "
         "repotting.", "beginner"),
        ("The Beginner's Balcony", "Small containers and simple herbs for a first city "
         "garden.", "beginner"),
        ("Grafting and Propagation", "Grafting fruit trees, taking cuttings and saving seed, "
         "for experienced growers.", "advanced"),
        ("Designing a Permaculture Garden", "Soil biology, water systems and planting guilds "
         "for skilled gardeners.", "advanced"),
    ],
    "photography": [
        ("Photography for Beginners", "Getting to know your first camera: modes, focus and "
         "framing.", "beginner"),
        ("Better Phone Photos", "Simple tips for sharper, brighter pictures with a "
         "smartphone.", "beginner"),
        ("Light Made Simple", "An easy introduction to exposure and natural light.",
         "beginner"),
        ("Mastering Studio Lighting", "Multi-flash set-ups, modifiers and colour control for "
         "professional portraits.", "advanced"),
        ("The Fine Art Print", "RAW processing, colour management and large-format printing "
         "for exhibitions.", "advanced"),
    ],
    "fitness": [
        ("Couch to 5K", "A gentle nine-week plan that takes complete beginners to running "
         "five kilometres.", "beginner"),
        ("Strength Basics", "Your first weeks in the gym: safe form for squats and presses.",
         "beginner"),
        ("Yoga for Stiff People", "Easy routines for newcomers with tight backs and hips.",
         "beginner"),
        ("The Marathon Plan", "Periodised training, fuelling and pacing for runners chasing a "
         "faster marathon.", "advanced"),
        ("Powerlifting Programming", "Peaking cycles and competition technique for "
         "experienced lifters.", "advanced"),
    ],
}
READERS_TRAIN = {  # (category, level): what readers say about themselves
    ("cooking", "beginner"): ["I've never really cooked and want to start",
                              "I just moved out and can only make toast",
                              "looking for simple recipes, I'm new to the kitchen",
                              "I'd like to bake bread for the first time"],
    ("cooking", "advanced"): ["I've cooked in restaurants for ten years",
                              "I bake sourdough every week and want to push further",
                              "an experienced home cook looking for professional techniques",
                              "I want to master classic French sauces"],
    ("outdoors", "beginner"): ["I've never been hiking but want to try",
                               "we want to take the kids camping for the first time",
                               "new to walking in the countryside",
                               "I'd like to start hiking at weekends"],
    ("outdoors", "advanced"): ["I've climbed the big peaks in summer and want winter routes",
                               "planning a solo crossing of a remote mountain range",
                               "an experienced hiker ready for a long-distance trail",
                               "I do technical scrambles and alpine routes"],
    ("programming", "beginner"): ["I want to learn to code from zero",
                                  "I've never written a program",
                                  "I'd like to make my first website",
                                  "complete beginner curious about programming"],
    ("programming", "advanced"): ["I'm a senior engineer working on distributed systems",
                                  "ten years of C++ and now I want to learn Rust",
                                  "I design databases for a living",
                                  "an experienced developer scaling backend services"],
    ("history", "beginner"): ["I know nothing about history and want an easy start",
                              "looking for a light introduction to the past",
                              "my teenager is getting interested in castles and knights",
                              "I'd like a simple overview of ancient Rome"],
    ("history", "advanced"): ["I have a history degree and read academic monographs",
                              "I want books based on archival sources",
                              "a serious reader of diplomatic and intelligence history",
                              "I research ancient trade routes"],
    ("finance", "beginner"): ["I've just opened my first bank account",
                              "I want to start saving but don't know how",
                              "never invested before and want to understand the basics",
                              "I need help making a monthly budget"],
    ("finance", "advanced"): ["I trade options and want to understand volatility better",
                              "I manage a large portfolio and think about factor exposure",
                              "an experienced investor interested in hedging strategies",
                              "I work in asset management"],
    ("gardening", "beginner"): ["I've just got my first houseplant",
                                "I'd like to grow a few herbs on my windowsill",
                                "new to gardening and want easy vegetables",
                                "I keep killing my plants and need the basics"],
    ("gardening", "advanced"): ["I've run an allotment for twenty years",
                                "I want to graft my own apple trees",
                                "an experienced grower designing a food forest",
                                "I save my own seeds and propagate everything"],
    ("photography", "beginner"): ["I got my first camera for my birthday",
                                  "I only take pictures with my phone",
                                  "I don't understand what the camera settings do",
                                  "beginner who wants nicer holiday photos"],
    ("photography", "advanced"): ["I shoot weddings professionally",
                                  "I'm preparing prints for my first gallery exhibition",
                                  "I use off-camera flash and want complex lighting set-ups",
                                  "a professional portrait photographer"],
    ("fitness", "beginner"): ["I haven't exercised in years and want to start",
                              "I can't run for more than a minute",
                              "first time going to a gym",
                              "my back is stiff and I've never done yoga"],
    ("fitness", "advanced"): ["I've run five marathons and want a personal best",
                              "I compete in powerlifting",
                              "an experienced athlete planning a training peak",
                              "I train six days a week and want to go faster"],
}
READERS_TEST = [
    ("I can't even boil an egg properly", "cooking", "beginner"),
    ("I run a bakery and want to refine my sourdough", "cooking", "advanced"),
    ("We'd like to try our first weekend of camping", "outdoors", "beginner"),
    ("I'm planning a winter traverse of the Highlands", "outdoors", "advanced"),
    ("I'd love to learn programming but have no idea where to begin", "programming", "beginner"),
    ("I maintain a replicated database cluster at work", "programming", "advanced"),
    ("I'd like an easy book about the ancient world", "history", "beginner"),
    ("I'm a historian of the Soviet Union", "history", "advanced"),
    ("I have no savings and want to start", "finance", "beginner"),
    ("I hedge currency risk for a living", "finance", "advanced"),
    ("My first flat has a tiny balcony I'd like to fill with plants", "gardening", "beginner"),
    ("I've been growing fruit for decades and want to try grafting", "gardening", "advanced"),
    ("My holiday snaps are always blurry", "photography", "beginner"),
    ("I light fashion shoots in my own studio", "photography", "advanced"),
    ("I want to start running but I'm very unfit", "fitness", "beginner"),
    ("I want to beat my marathon time next spring", "fitness", "advanced"),
]


def recommendation(rng: random.Random) -> None:
    books = [(f"b{i:02d}", title, description, category, level)
             for i, (category, title, description, level) in enumerate(
                 (c, *book) for c, items in BOOKS.items() for book in items)]
    write("books.csv", ["id", "title", "description", "category", "level"], books)
    pairs = []
    for (category, level), readers in READERS_TRAIN.items():
        for reader in readers:
            # Every book of the reader's subject: the right level is relevant, the other level
            # is not. Topic is left to the embedding retrieval that picks the candidates.
            for book in [b for b in books if b[3] == category]:
                pairs.append((reader, f"{book[1]}: {book[2]}",
                              "relevant" if book[4] == level else "irrelevant"))
    rng.shuffle(pairs)
    write("reader_pairs.csv", ["text_a", "text_b", "label"], pairs)
    write("readers_test.csv", ["text", "category", "level"], READERS_TEST)


# --- 4. documents: topics that arrive over time ------------------------------------------

DOC_SLOTS = {
    "team": ["Rovers", "City", "United", "the Harriers", "the Lions"],
    "sport": ["football", "rugby", "cricket", "hockey", "basketball"],
    "athlete": ["the captain", "the striker", "a teenage sprinter", "the veteran goalkeeper"],
    "firm": ["a regional bank", "the supermarket chain", "a car maker", "an insurer",
             "the airline"],
    "money": ["£40m", "$2bn", "€600m", "$75m"],
    "gadget": ["smartphone", "laptop", "smartwatch", "headset", "tablet"],
    "tech": ["the chip maker", "a software start-up", "the search giant", "a games studio"],
    "disease": ["flu", "measles", "diabetes", "heart disease", "malaria"],
    "place": ["the north", "coastal towns", "the capital", "rural areas"],
    "weather": ["heatwave", "drought", "flooding", "wildfires", "storm"],
}
TOPICS = {
    "sports": [
        "{team} beat their rivals 3-1 in a tense {sport} match. {athlete} scored twice.",
        "{athlete} was injured in training and will miss the {sport} final.",
        "The {sport} season opens this weekend with {team} as favourites.",
        "{team} signed {athlete} from a rival club. Fans welcomed the transfer.",
        "A late goal gave {team} the cup. The {sport} crowd stormed the pitch.",
    ],
    "business": [
        "{firm} reported profits of {money}, ahead of forecasts. Shares rose.",
        "{firm} plans to buy a competitor for {money}. Regulators will review the deal.",
        "Inflation squeezed margins at {firm}, which warned of weaker sales.",
        "{firm} will cut costs by {money} and close branches in {place}.",
        "Investors sold shares in {firm} after its chief executive resigned.",
    ],
    "technology": [
        "{tech} unveiled a new {gadget} with a faster processor and longer battery life.",
        "A software bug forced {tech} to pull an update for its {gadget}.",
        "{tech} is training a new AI model on its data centres in {place}.",
        "Hackers stole passwords from {tech}; users were told to reset them.",
        "Reviewers praised the screen of the latest {gadget} from {tech}.",
    ],
    "health": [
        "Cases of {disease} rose in {place}, and hospitals asked for more staff.",
        "A new vaccine against {disease} passed its final clinical trial.",
        "Doctors say regular exercise cuts the risk of {disease} by a third.",
        "The health service will screen adults in {place} for {disease}.",
        "A study of 20,000 patients links poor sleep to {disease}.",
    ],
    "climate": [
        "A {weather} hit {place}, the third this year; scientists blame global warming.",
        "Carbon emissions fell as {place} replaced coal with wind and solar power.",
        "Sea levels are rising faster than expected, threatening {place}.",
        "Governments agreed to phase out fossil fuels after the summer's {weather}.",
        "Melting glaciers and the {weather} in {place} show the climate is changing.",
    ],
}
TOPICS_TEST = {
    "sports": ["{team} lost on penalties after extra time in the {sport} semi-final.",
               "The {sport} league fined {team} for crowd trouble.",
               "{athlete} broke the national record at the championships.",
               "{team} sacked their coach after five {sport} defeats in a row.",
               "Tickets for the {sport} derby between {team} and their neighbours sold out."],
    "business": ["{firm}'s revenue fell for a third quarter in a row.",
                 "The central bank raised interest rates, hitting {firm}.",
                 "Workers at {firm} went on strike over pay.",
                 "{firm} agreed a {money} merger with a rival.",
                 "Shareholders of {firm} rejected the board's pay plan."],
    "technology": ["{tech} launched an app that translates speech in real time.",
                   "Battery problems delayed the release of {tech}'s {gadget}.",
                   "Engineers at {tech} built a faster quantum computer.",
                   "{tech} will stop updating its oldest {gadget} next year.",
                   "A flaw in the {gadget} let attackers read messages, {tech} admitted."],
    "health": ["Hospitals in {place} are running short of beds this winter.",
               "Nurses in {place} say waiting lists for {disease} care are growing.",
               "The new drug slowed {disease} in most patients.",
               "Children in {place} will be offered a free {disease} jab.",
               "Researchers found that a daily walk lowers the risk of {disease}."],
    "climate": ["Record temperatures were measured across {place} this summer.",
                "The {weather} destroyed crops, and experts link it to a warming planet.",
                "Rising seas forced families in {place} to leave their homes.",
                "A UN report warns that {weather} will be more frequent as the planet warms.",
                "Solar farms now supply half the electricity in {place}, cutting emissions."],
}


def documents(rng: random.Random) -> None:
    def rows(topics: list[str], n: int, templates: dict[str, list[str]]) -> list[tuple]:
        out = [row for t in topics for row in fill(rng, templates[t], DOC_SLOTS, n, t)]
        rng.shuffle(out)
        return out

    write("news_v1.csv", ["text", "label"], rows(["sports", "business", "technology"], 12, TOPICS))
    write("news_health.csv", ["text", "label"], rows(["health"], 12, TOPICS))
    write("news_climate.csv", ["text", "label"], rows(["climate"], 12, TOPICS))
    held_out = rows(list(TOPICS_TEST), 16, TOPICS_TEST)
    dev = [r for t in TOPICS_TEST for r in [r for r in held_out if r[1] == t][:8]]
    rng.shuffle(dev)
    write("news_dev.csv", ["text", "label"], dev)
    write("news_test.csv", ["text", "label"], [r for r in held_out if r not in dev])


def main() -> None:
    customer_service(random.Random(1))
    financial_news(random.Random(2))
    recommendation(random.Random(3))
    documents(random.Random(4))


if __name__ == "__main__":
    main()
