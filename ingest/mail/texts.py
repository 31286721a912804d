"""The wording of the mails to a person and of the self-service pages, in Finnish, Swedish and English.

Plain text only: a caller putting a text into HTML escapes it (and the values) itself.
Placeholders are str.format-style names; every key has the same ones in every language.
"""

from __future__ import annotations

import re

LANGUAGES: tuple[str, ...] = ("fi", "sv", "en")

_HEADER_CHARS = 4096  # at most this much of an Accept-Language header is read
_HEADER_ENTRIES = 32  # and at most this many of its comma-separated entries
_TAG = re.compile(r"\*|[a-z]{1,8}(?:-[a-z0-9]{1,8})*")  # ASCII only, after lower()
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")  # RFC 9110 §12.4.2

# key -> language -> wording.
_TEXTS: dict[str, dict[str, str]] = {
    "confirm_subject": {
        "fi": "{controller}: markkinointiviestien tilauksen vahvistus",
        "sv": "{controller}: bekräfta din prenumeration",
        "en": "{controller}: please confirm your subscription",
    },
    "confirm_body": {
        "fi": "Hei,\n\n"
        "{controller} on saanut pyynnön lähettää markkinointiviestejä tähän sähköpostiosoitteeseen. "
        "Pyyntö koskee seuraavaa suostumusta:\n\n"
        "\u201d{consent_text}\u201d\n\n"
        "Tilaus vahvistetaan avaamalla tämä linkki:\n{link}\n\n"
        "Linkki toimii yhden kerran ja on voimassa {days} päivän ajan.\n\n"
        "Jos tilausta ei ole pyydetty, tämän viestin voi jättää huomiotta. Silloin mitään ei tapahdu: "
        "osoitetta ei lisätä postituslistalle eikä siihen lähetetä markkinointia.\n\n"
        "Ystävällisin terveisin\n{controller}\n",
        "sv": "Hej!\n\n"
        "Någon, troligen du, har bett att få marknadsföring från {controller} till den här "
        "e-postadressen. Samtycket gäller följande:\n\n"
        "\u201d{consent_text}\u201d\n\n"
        "Bekräfta prenumerationen genom att öppna länken:\n{link}\n\n"
        "Länken fungerar en gång och gäller i {days} dagar.\n\n"
        "Om det inte var du som bad om det här kan du bortse från meddelandet. Då händer ingenting: "
        "adressen läggs inte till och vi skickar ingen marknadsföring.\n\n"
        "Med vänliga hälsningar\n{controller}\n",
        "en": "Hello,\n\n"
        "Someone, probably you, asked to receive marketing from {controller} at this e-mail address. "
        "The consent asked for reads:\n\n"
        "\u201c{consent_text}\u201d\n\n"
        "To confirm the subscription, open this link:\n{link}\n\n"
        "The link works once and is valid for {days} days.\n\n"
        "If you did not ask for this, you can ignore this message. Nothing will happen: the address "
        "will not be subscribed and we will not send it any marketing.\n\n"
        "Kind regards,\n{controller}\n",
    },
    "receipt_subject": {
        "fi": "{controller}: kuitti suostumuksesta",
        "sv": "{controller}: kvitto på ditt samtycke",
        "en": "{controller}: receipt for your consent",
    },
    "receipt_body": {
        "fi": "Hei,\n\n"
        "tämä viesti on kuitti annetusta suostumuksesta.\n\n"
        "Suostumuksen sanamuoto:\n\u201d{consent_text}\u201d\n\n"
        "Annettu: {granted_at}\n"
        "Lomake: {source}\n"
        "Rekisterinpitäjä: {controller}\n"
        "Yhteystiedot: {contact}\n\n"
        "Suostumuksen voi perua milloin tahansa yhtä helposti kuin sen antoi. "
        "Peruminen onnistuu tästä linkistä:\n{unsubscribe_link}\n\n"
        "Omat tallennetut tiedot voi tarkistaa tästä linkistä:\n{access_link}\n\n"
        "Viestin liitteenä on sama kuitti koneluettavassa muodossa (consent-receipt.json). "
        "Viesti kannattaa säilyttää.\n\n"
        "Ystävällisin terveisin\n{controller}\n",
        "sv": "Hej!\n\n"
        "Det här är ett kvitto på det samtycke du har lämnat.\n\n"
        "Det här samtyckte du till:\n\u201d{consent_text}\u201d\n\n"
        "Tidpunkt: {granted_at}\n"
        "Formulär: {source}\n"
        "Personuppgiftsansvarig: {controller}\n"
        "Kontakt: {contact}\n\n"
        "Du kan när som helst återkalla ditt samtycke, lika enkelt som du lämnade det, "
        "via den här länken:\n{unsubscribe_link}\n\n"
        "Via den här länken kan du se vilka uppgifter vi har om dig:\n{access_link}\n\n"
        "En maskinläsbar kopia av kvittot är bifogad (consent-receipt.json). "
        "Spara gärna det här meddelandet.\n\n"
        "Med vänliga hälsningar\n{controller}\n",
        "en": "Hello,\n\n"
        "This message is a record of the consent you gave.\n\n"
        "What you agreed to:\n\u201c{consent_text}\u201d\n\n"
        "When: {granted_at}\n"
        "Form: {source}\n"
        "Controller: {controller}\n"
        "Contact: {contact}\n\n"
        "You can withdraw your consent at any time, as easily as you gave it, with this link:\n"
        "{unsubscribe_link}\n\n"
        "To see the data we hold about you, use this link:\n{access_link}\n\n"
        "A machine-readable copy of this receipt is attached (consent-receipt.json). "
        "Please keep this message for your records.\n\n"
        "Kind regards,\n{controller}\n",
    },
    "access_subject": {
        "fi": "{controller}: linkki tallennettuihin tietoihin",
        "sv": "{controller}: länk till dina uppgifter",
        "en": "{controller}: your link to see your data",
    },
    "access_body": {
        "fi": "Hei,\n\n"
        "tähän sähköpostiosoitteeseen on pyydetty linkkiä, josta näkee, mitä tietoja {controller} "
        "on siihen liittyen tallentanut. Tiedot näkyvät tästä linkistä:\n{link}\n\n"
        "Linkki toimii yhden kerran ja on voimassa {minutes} minuutin ajan. "
        "Linkkiä ei kannata välittää eteenpäin.\n\n"
        "Jos linkkiä ei ole pyydetty, tämän viestin voi jättää huomiotta.\n\n"
        "Ystävällisin terveisin\n{controller}\n",
        "sv": "Hej!\n\n"
        "Du har bett att få se vilka uppgifter {controller} har om dig. "
        "Öppna länken för att se dem:\n{link}\n\n"
        "Länken fungerar en gång och gäller i {minutes} minuter. "
        "Skicka inte vidare den till någon annan.\n\n"
        "Om det inte var du som bad om det här kan du bortse från meddelandet.\n\n"
        "Med vänliga hälsningar\n{controller}\n",
        "en": "Hello,\n\n"
        "You asked to see the data {controller} holds about you. Open this link to see it:\n{link}\n\n"
        "The link works once and is valid for {minutes} minutes. Please do not forward it.\n\n"
        "If you did not ask for this, you can ignore this message.\n\n"
        "Kind regards,\n{controller}\n",
    },
    "page_access_title": {"fi": "Omat tiedot", "sv": "Se dina uppgifter", "en": "See your data"},
    "page_access_intro": {
        "fi": "Kirjoita sähköpostiosoite alle. Osoitteeseen lähetetään linkki, josta näkee, "
        "mitä tietoja {controller} on siihen liittyen tallentanut.",
        "sv": "Ange din e-postadress så skickar vi en länk där du kan se vilka uppgifter "
        "{controller} har om dig.",
        "en": "Enter your e-mail address and we will send you a link to see the data "
        "{controller} holds about you.",
    },
    "page_email_label": {"fi": "Sähköpostiosoite", "sv": "E-postadress", "en": "E-mail address"},
    "page_access_submit": {"fi": "Lähetä linkki", "sv": "Skicka länk", "en": "Send link"},
    "page_access_sent_title": {
        "fi": "Tarkista sähköposti",
        "sv": "Titta i din e-post",
        "en": "Check your e-mail",
    },
    "page_access_sent_body": {
        "fi": "Jos tähän osoitteeseen liittyy tallennettuja tietoja, osoitteeseen on lähetetty linkki. "
        "Linkki toimii kerran ja vain lyhyen aikaa. Jos viestiä ei näy, kannattaa tarkistaa "
        "myös roskapostikansio.",
        "sv": "Om vi har uppgifter för den här adressen har vi skickat en länk till den. "
        "Länken fungerar en gång och bara under en kort tid. Om inget meddelande kommer, "
        "titta också i skräpposten.",
        "en": "If we hold data for this address, we have sent a link to it. "
        "The link works once and only for a short time. If no message arrives, "
        "please check your spam folder too.",
    },
    "page_view_title": {"fi": "Tallennetut tiedot", "sv": "Dina uppgifter", "en": "Your data"},
    "page_view_intro": {
        "fi": "Tässä ovat tiedot, jotka {controller} on tallentanut tähän sähköpostiosoitteeseen "
        "liittyen. Tiedot voi ladata, suoramarkkinoinnin voi kieltää ja tietojen poistamista "
        "voi pyytää.",
        "sv": "Här är de uppgifter som {controller} har om den här e-postadressen. Du kan ladda ner "
        "dem, invända mot marknadsföring eller begära att de raderas.",
        "en": "This is the data {controller} holds about this e-mail address. You can download it, "
        "object to marketing, or ask for it to be erased.",
    },
    "page_download_json": {
        "fi": "Lataa tiedot (JSON)",
        "sv": "Ladda ner som JSON",
        "en": "Download as JSON",
    },
    "page_object_button": {
        "fi": "Kiellä suoramarkkinointi",
        "sv": "Invänd mot marknadsföring",
        "en": "Object to marketing",
    },
    "page_erase_button": {
        "fi": "Pyydä tietojen poistamista",
        "sv": "Begär radering",
        "en": "Ask for erasure",
    },
    "page_objected": {
        "fi": "Valmis. Tietoja ei enää käytetä markkinointiin.",
        "sv": "Klart. Vi använder inte längre dina uppgifter för marknadsföring.",
        "en": "Done. We will no longer use your data for marketing.",
    },
    "page_erase_requested": {
        "fi": "Poistopyyntö on vastaanotettu. Tiedot poistetaan viimeistään {due}.",
        "sv": "Vi har tagit emot din begäran om radering. Uppgifterna raderas senast {due}.",
        "en": "We have received your request for erasure. Your data will be erased by {due}.",
    },
    "page_erased": {
        "fi": "Tiedot on poistettu.",
        "sv": "Dina uppgifter har raderats.",
        "en": "Your data has been erased.",
    },
    "page_link_invalid": {
        "fi": "Linkki ei ole enää voimassa. Se on ehkä jo käytetty tai vanhentunut. Uuden linkin voi tilata.",
        "sv": "Länken gäller inte längre. Den kan redan ha använts eller ha gått ut. Du kan begära en ny.",
        "en": "This link is no longer valid. It may have been used already or have expired. "
        "You can ask for a new one.",
    },
    "page_rate_limited": {
        "fi": "Liian monta pyyntöä. Yritä myöhemmin uudelleen.",
        "sv": "För många förfrågningar. Försök igen senare.",
        "en": "Too many requests. Please try again later.",
    },
    "page_field_name": {"fi": "Nimi", "sv": "Namn", "en": "Name"},
    "page_field_email": {"fi": "Sähköposti", "sv": "E-post", "en": "E-mail"},
    "page_field_phone": {"fi": "Puhelin", "sv": "Telefon", "en": "Phone"},
    "page_field_message": {"fi": "Viesti", "sv": "Meddelande", "en": "Message"},
    "page_field_received": {"fi": "Vastaanotettu", "sv": "Mottaget", "en": "Received"},
    "page_field_source": {"fi": "Lomake", "sv": "Formulär", "en": "Form"},
    "page_field_consents": {"fi": "Suostumukset", "sv": "Samtycken", "en": "Consents"},
    "page_marketing_suppressed": {
        "fi": "Tähän osoitteeseen ei lähetetä markkinointia.",
        "sv": "Den här adressen får ingen marknadsföring.",
        "en": "This address will not receive marketing.",
    },
}


def _weight(params: list[str]) -> int | None:
    """An entry's q-value in thousandths (1000 when absent); None when its parameters are malformed."""
    if not params:
        return 1000
    if len(params) > 1:
        return None
    name, sep, value = params[0].strip(" \t").partition("=")
    if not sep or name.lower() != "q" or not _QVALUE.fullmatch(value):
        return None
    whole, _, fraction = value.partition(".")
    return int(whole) * 1000 + int((fraction + "000")[:3])


def pick_language(accept_language: str | None, default: str) -> str:
    """The first of LANGUAGES the Accept-Language header prefers (RFC 9110 q-values), else `default`.

    'fi-FI' matches 'fi' (an exact 'fi' entry wins over it), q=0 excludes, '*' stands for
    `default`; among equal q-values the earlier entry wins. Linear in the header's length:
    only the first 32 entries and at most 4096 characters are read; malformed entries are
    skipped, never an exception.
    """
    if not accept_language:
        return default
    best: dict[str, tuple[int, int, int]] = {}  # language -> (specificity, q, position)
    entries = accept_language[:_HEADER_CHARS].split(",", _HEADER_ENTRIES)[:_HEADER_ENTRIES]
    for position, entry in enumerate(entries):
        tag, *params = entry.split(";")
        tag = tag.strip(" \t").lower()
        if not _TAG.fullmatch(tag):
            continue
        q = _weight(params)
        if q is None:
            continue
        if tag == "*":
            language, specificity = default, 0
        else:
            language = tag.partition("-")[0]
            if language not in LANGUAGES:
                continue
            specificity = 2 if language == tag else 1
        known = best.get(language)
        if known is None or (specificity, q) > known[:2]:
            best[language] = (specificity, q, position)
    wanted = [(q, -position, language) for language, (_, q, position) in best.items() if q > 0]
    return max(wanted)[2] if wanted else default


def text(language: str, key: str, **values: str) -> str:
    """The wording of `key` in `language`, with `values` put in its named placeholders.

    KeyError for an unknown key or a missing value; ValueError for a language not in LANGUAGES.
    """
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")
    return _TEXTS[key][language].format(**values)
