"""What the words of a returned message mean: the phrases real mail servers use.

Each rule is a category and the phrases that say it, in the languages servers write in
(English, German, French, Spanish, Italian, Dutch, Portuguese, Japanese, Russian,
Chinese). :func:`category_of_text` tries them in order: a refusal of *our* message or
sender (policy, reputation, spam, SPF/DKIM/DMARC, relaying) first, since it must never
count against the person, then a full mailbox, then an address that is gone, then a
temporary failure. The status codes (RFC 3463) decide only where the words do not
(:func:`category_of_code`).
"""

from __future__ import annotations

import re

from mailer.store.status import BounceKind

K = BounceKind


def _any(*phrases: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in phrases), re.IGNORECASE)


# Refusals of the message or of the sender: about us, never about the person.
OURS = _any(
    # block lists, reputation, spam
    r"block ?list|black ?list|\bblocked\b|\bblock(ed)? by\b|\bdnsbl\b|\brbl\b|spamhaus|"
    r"spamcop|sorbs|barracuda(central)?|mailspike|\bbanned\b|\bdenylist",
    r"reputation|\bspam\b|spam[- ]?(detected|filter|score|content)|unsolicited|"
    r"bulk (e-?mail|mail)|junk ?mail|suspected (spam|phishing)|phish|\bvirus|malware|"
    r"infected|content (filter|rejected|policy)|message content|\bpolicy\b|policies|"
    r"not (accepted|allowed) (for|by|due to)|prohibited|poor reputation|"
    r"low reputation|rejected (for|due to|because of) (policy|content)",
    # our sender, our authentication, our servers
    r"\bspf\b|\bdkim\b|\bdmarc\b|sender (address )?(rejected|denied|refused|blocked|verify|"
    r"verification)|(sender|from) (domain|address) (does not|doesn't) (exist|resolve)|"
    r"sender (domain|address) (not|is not|must)|sender.{0,40}(not (found|exist|allowed))|"
    r"mail from.{0,40}(rejected|refused|denied)|\bmail from:? address|"
    r"envelope sender|return[- ]path|bad sender|invalid sender|unknown sender|"
    r"reverse (dns|lookup)|\bptr\b|\brdns\b|(helo|ehlo) (command )?(rejected|refused|"
    r"invalid|not)|(invalid|bad) (helo|ehlo)|"
    r"not authori[sz]ed|authenticat(ion|ed) (checks? )?(is )?(required|failed|failure)|"
    r"must (be )?authenticate|client host.{0,60}rejected|access denied|smtp auth|"
    r"sender address|domain of sender|unroutable sender|unverif(y|i)able sending|"
    r"mismatches client ip|invalid ip|network not allowed|relay quota|"
    r"protocol violation|message filtered|domain filter|user complaints|unexpected volume|"
    r"messages from \[?\d{1,3}(\.\d{1,3}){3}|groups\.google\.com|google groups|"
    r"header error|8-bit data|line limit exceeded|line too long|refused to talk to me|"
    r"address is not verified|identities failed|\b(mail|message) (was |has been )?rejected\b|"
    r"permission to post|have permission|not (have|got) (the )?permission|"
    r"権限|權限|权限|autorisation de|permiso para|berechtigung|"
    r"relay(ing)? (access )?(denied|not permitted|prohibited|not allowed)|"
    r"(not|unable to|cannot|will not) relay|relay not permitted|\bnorelay|"
    r"open relay|we do not relay|not permitted to relay|unauthenticated relay",
    # our message: size, standards, rate
    r"message (size )?(is )?too (big|large)|length exceeds|exceed\w* .{0,30}message size|"
    r"not accepting mail from|exceeds? (the )?(maximum |max )?"
    r"(message )?size|message size exceeds|size limit|\btoo large\b|too many (recipients|"
    r"connections|messages|mails|emails)|rate ?limit|rate that prevents|"
    r"sending rate|throttl|too fast|too many (concurrent|simultaneous)|"
    r"not (rfc|RFC)[- ]?(compliant|5322|2822)|rfc ?(5322|2822|822) |"
    r"multiple (from|date|message-id)|invalid (from|header)|headers? (is |are )?invalid|"
    r"message (was )?(not )?(compliant|rejected by)|ip address.{0,40}(listed|blocked|"
    r"rejected|refused|not allowed|banned)|"
    r"your (ip|server|domain|message|mail|email) (address )?(has been |was |is )?"
    r"(blocked|rejected|refused|listed|blacklisted|temporarily)",
    # other languages: spam, refused, blocked
    r"垃圾邮件|拒绝|拒收|受信拒否|迷惑メール|スパム|спам|заблокирован.{0,20}(ip|адрес отправителя)|"
    r"rechazad|rifiutat|abgelehnt|geblockt|gesperrt.{0,20}(ip|absender)|refusé|"
    r"bloqueado|bloccat|geweigerd",
)

# The mailbox exists but is full.
FULL = _any(
    r"mail ?box (is |was )?(currently )?full|mail ?box.{0,30}\bfull\b|inbox (is )?full|"
    r"over ?quota|over (the|its|his|her|their) (storage )?(quota|limit)|quota (exceeded|exceed|"
    r"full|limit)|exceed(s|ed)? (the |his |her |their )?(storage |mailbox |disk )?(quota|"
    r"allocation)|"
    r"storage (space|limit|allocation|quota)|out of (storage|space|disk)|"
    r"would exceed (the )?(mailbox|quota)|mailfolder (is )?full|disk quota|"
    r"mailbox size limit|too many messages in (the|this) mailbox|user has no space|"
    r"mailbox has exceeded|full mailbox|account is full|is over (its )?(size|limit)|"
    r"mailbox exceeded|messages in .{0,20}mailbox exceeded|mailbox exceeds|quota violation|"
    r"exceed\w* (their|his|her|its|the|your) (mailbox |storage |disk )?quota|"
    r"reached (the |its |his |her |their )?(disk |storage |mailbox )?quota|"
    r"exceeds (the )?allowed size",
    r"postfach (ist )?voll|speicherplatz|quota (ist )?(überschritten|erreicht)|"
    r"bo[iî]te (aux lettres |mail )?(est )?(pleine|satur[ée]e)|quota d[ée]pass[ée]|"
    r"buz[óo]n (est[áa] )?(lleno|completo)|cuota (excedida|superada)|casella (di posta )?"
    r"(piena|satura)|spazio (esaurito|insufficiente)|mailbox (is )?vol|postvak (is )?vol|"
    r"caixa (postal )?(cheia|lotada)|cota excedida|容量|一杯|満杯|ящик переполнен|"
    r"переполнен|превышен.{0,20}(квот|размер ящика)|邮箱已满|空间不足|信箱已满|容量不足",
)

# The address is gone: it never existed, or was closed, disabled or moved away.
GONE = _any(
    r"user ?unknown|unknown (local[- ]part|user|recipient|mailbox|address|account|alias)|"
    r"unknown or illegal (alias|user)|no such (user|recipient|mailbox|address|account|person|"
    r"local user|domain)|(user|mailbox|recipient|address|account|addressee|alias) "
    r"(does not|doesn't|did not|do not|not) exist|does ?n[o']?t exist|"
    r"(recipient|user|mailbox|address|account|addressee|alias) (was |is )?"
    r"(not found|unknown|invalid|not valid|not listed|unavailable)|"
    r"invalid (recipient|mailbox|address|user|account|email address)|"
    r"not a (valid|known) (mailbox|recipient|user|address)|bad (destination )?"
    r"(mailbox |recipient )?address|bad recipient|recipient rejected|"
    r"address (unknown|not found|invalid)|addressee unknown|not recogni[sz]ed|"
    r"invalid (final )?(delivery )?user ?id|invalid final delivery|"
    r"no mailbox (here )?(by that name|for|found)|mailbox (is )?frozen|host \S+ not found|"
    r"mailbox (not found|unavailable|"
    r"not available|disabled|inactive|is disabled|has been disabled|closed|deleted|"
    r"suspended|locked|is inactive|no longer|does not exist)|"
    r"account (has been |is |was )?(disabled|closed|expired|deleted|inactive|suspended|"
    r"discontinued|terminated|deactivated|removed|locked|blocked|frozen|not active|"
    r"no longer)|(disabled|discontinued|deactivated|inactive|suspended|expired|closed|"
    r"terminated|deleted|blocked|locked|frozen) (account|mailbox|user|recipient|address)|"
    r"is (disabled|inactive|discontinued|deactivated|suspended|not active|no longer (active|"
    r"valid|in use|available))|no longer (exists|active|valid|in use|available|"
    r"accepting mail|works? (here|for)|employed)|has (left|moved|been moved)|"
    r"not our customer|unroute?able (address|recipient)|recipnotfound|recipientnotfound|"
    r"resolver\.adr\.|not listed in (domino|the directory|our directory|public name)|"
    r"(this user|user) doesn'?t have an? .{1,40} account|"
    r"(the )?email account that you tried to reach (does not exist|is disabled|is inactive)|"
    r"(user|recipient|mailbox) (is )?(inactive|disabled|terminated|suspended|deactivated|"
    r"expired|locked)|host (or domain name )?(not found|unknown)|unknown host|"
    r"domain (name )?(not found|does not exist|unknown|is not valid|doesn't exist)|"
    r"(no|null) mx\b|does not accept (e-?)?mail|name or service not known|"
    r"unrouteable (mail )?domain|no valid recipients|"
    r"(user|recipient|address) (is )?not (local|here|known|found|valid)|"
    r"address (is )?(no longer|not) (valid|in use|active)|invalid address|"
    r"mailbox name not allowed|no such|recipient unknown|"
    r"dd this user doesn|this account (has been|is) (disabled|suspended|closed|deactivated)|"
    r"(no|not have an?) (final )?(e-?mail )?delivery point|"
    r"no matches to (nameserver|name server) query|not a registered (gateway )?user|"
    r"did not (exactly )?match an? .{0,30}(e-?mail )?address",
    # German
    r"(benutzer|empf[äa]nger|adresse|mailbox|postfach|konto|nutzer)\w* (ist |wurde )?"
    r"(unbekannt|existiert nicht|nicht gefunden|ung[üu]ltig|deaktiviert|gesperrt|gel[öo]scht)|"
    r"unbekannte?r? (benutzer|empf[äa]nger|adresse|user)|existiert nicht|gibt es nicht|"
    r"kein (benutzer|postfach|konto)",
    # French
    r"(utilisateur|destinataire|adresse|compte|bo[iî]te)\w* (est )?(inconnu|invalide|"
    r"inexistant|d[ée]sactiv|supprim|introuvable|ferm[ée])|n'existe (pas|plus)|"
    r"(adresse|utilisateur|destinataire) (e-?mail )?(inconnu|invalide|inexistant)",
    # Spanish, Italian, Portuguese
    r"(usuario|destinatario|direcci[óo]n|cuenta|buz[óo]n)\w* (es )?(desconocid|no existe|"
    r"inexistente|no v[áa]lid|inv[áa]lid|desactivad|suspendid|cancelad|inactiv|bloquead)|"
    r"no existe|(utente|destinatario|indirizzo|account|casella)\w* (è )?(sconosciut|"
    r"inesistent|non esiste|non valid|disabilitat|disattivat|sospes)|non esiste|"
    r"(usu[áa]rio|utilizador|destinat[áa]rio|endere[çc]o|conta|caixa)\w* (postal )?"
    r"(desconhecid|inexistente|n[ãa]o existe|inv[áa]lid|desativad|inativ|suspens|"
    r"bloquead|cancelad)|n[ãa]o existe",
    # Dutch
    r"(gebruiker|ontvanger|adres|mailbox|account)\w* (is )?(onbekend|bestaat niet|"
    r"ongeldig|niet gevonden|gedeactiveerd|opgeheven)|onbekende (gebruiker|ontvanger)|"
    r"bestaat niet",
    # Japanese, Russian, Chinese
    r"存在しません|存在しない|宛先不明|見つかりません|ディレクトリ.{0,12}ありません|宛先が見つかりません|ユーザ(ー)?が(存在|見つかりません)|"
    r"アカウント.{0,10}(停止|無効|削除)|該当(する)?ユーザ|"
    r"(пользовател|получател|адрес|ящик|аккаунт|учетн)\w* .{0,20}(не (найден|существует)|"
    r"неизвест|заблокирован|отключен|удален|не активен)|нет такого|не существует|"
    r"неизвестн\w* (пользовател|получател|адрес)|"
    r"用户不存在|用户名不存在|收件人不存在|地址不存在|邮箱不存在|帐户不存在|账户不存在|"
    r"账号不存在|用户.{0,6}(停用|冻结|注销|不存在)|不存在|已停用|被冻结|已冻结|已注销|查无此人",
)

# Failures that may pass: the server was down, the message waited too long.
TEMPORARY = _any(
    r"retry (time(out)?|period) (exceeded|expired)|message expired|(has )?expired|"
    r"time(d)? ?out|could not be delivered (for|within|in)|not (been )?delivered (for|within)|"
    r"delivery time expired|unable to deliver.{0,40}(days|hours)|"
    r"connection (refused|reset|timed out|lost|dropped|closed)|lost connection|"
    r"try (again )?later|temporar|deferr|service (unavailable|not available)|"
    r"system (error|busy|not available|unavailable)|too busy|local error|"
    r"no route to host|network (is )?unreachable|i/o error|mail loop|routing loop|"
    r"too many hops|\bloop|host unreachable|could not connect|"
    r"can'?t connect|cannot connect|unable to connect|name server|dns (error|failure|"
    r"lookup)|try again|resources? (temporarily )?unavailable|internal (server )?error",
)

# A failure the server itself says may pass, whatever else it names ("Host not found,
# try again": the name server did not answer).
SURELY_TEMPORARY = _any(
    r"not found, try again|try again later|temporar(il)?y (unavailable|failure|rejected|"
    r"deferred|not available|locked|suspended)|temporary (lookup )?failure",
    # a name server's answer: a domain that is really gone fails send after send and is
    # marked bounced by the soft count; one lookup never suppresses anybody
    r"dns error|dns type '?\w+'? lookup|lookup of \S+ responded",
    # a program on the receiving server failed (a filter, a local delivery agent)
    r"pipe to \||command died with|command output|failed to read response template|"
    r"couldn'?t create|child status|mailer error",
)

# A warning that the message is still on its way: never a failure.
DELAYED = _any(
    r"still (trying|being tried|attempting|undelivered|in the queue|queued)|"
    r"attempts will continue|will continue to be made|will continue to try|postponed|will "
    r"(continue|keep) (to )?(try|retry|attempt)|will be retried|delivery (is |has been )?"
    r"delayed|has been delayed|delay(ed)? (notification|notice|warning)|"
    r"not yet been delivered|has not yet been|warning: message .{0,40}undelivered|"
    r"no action is required on your part|will retry|retry (until|for)|"
    r"zustellung verz[öo]gert|verz[öo]gert|distribution retard[ée]e|"
    r"entrega retrasada|retrasad|consegna ritardata|vertraagd|atrasad",
)

# Words that make a notice a warning whatever else it says ("could not be delivered ...
# delivery attempts will continue").
STILL_TRYING = _any(
    r"attempts will continue|will continue to (be made|try|attempt|retry)|will keep trying|"
    r"still (trying|being retried)|will (be )?retr(y|ied)|has been postponed|"
    r"do not need to re-?send|no action is required on your part"
)

# Automatic replies that are not bounces (subjects).
AUTO_REPLY_SUBJECT = _any(
    r"^\s*(automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|auto:|"
    r"out of (the )?office|away from|on (vacation|holiday|leave)|vacation|"
    r"abwesenheit|automatische antwort|r[ée]ponse automatique|absence|"
    r"respuesta autom[áa]tica|fuera de la oficina|risposta automatica|fuori sede|"
    r"automatisch antwoord|afwezig|resposta autom[áa]tica|ausente|自動応答|自动回复|"
    r"автоответ|отсутств)",
)


def category_of_text(text: str) -> BounceKind | None:
    """The category the words of one recipient's failure give, if any.

    When the words say both that the address is gone and that the message was refused
    (a filter that answers "user unknown" for mail it refuses, a notice that names a
    block list and a missing user), the refusal wins: a person is never suppressed on
    words that may be about us.
    """
    if not text:
        return None
    # "550-5.2.1 The user ... at a rate that\n550-5.2.1 prevents": one sentence again.
    text = " ".join(_CONTINUATION.sub(" ", text).split())
    if RECIPIENT_GONE.search(text):
        return K.HARD
    if OURS.search(text):
        strong = STRONGLY_GONE.search(text)
        if strong and not _SENDER_SIDE.search(text):
            return K.HARD
        return K.POLICY
    if FULL.search(text):
        return K.FULL
    if SURELY_TEMPORARY.search(text):
        return K.SOFT
    if GONE.search(text):
        return K.HARD
    if TEMPORARY.search(text):
        return K.SOFT
    return None


_CONTINUATION = re.compile(r"(?m)(?:^|(?<=\s))[245]\d\d-(?:[245]\.\d{1,3}\.\d{1,3}\s)?")

# Words that say the recipient's own account is gone or shut, whatever else is named.
RECIPIENT_GONE = _any(
    r"recipient(')?s? (account|mailbox) (is |has been )?(blocked|disabled|closed|suspended|"
    r"deactivated|deleted)|le compte du destinataire (est )?(bloqu|d[ée]sactiv|supprim|ferm)"
)

# Words that say the address is gone so plainly that a passing word such as "policy"
# elsewhere in the same notice does not change it.
STRONGLY_GONE = _any(
    r"user ?unknown|no such (user|mailbox|recipient)|(mailbox|user|address|account) "
    r"(does not|doesn't) exist|unknown (user|recipient|mailbox)|recipient not found|"
    r"account (has been |is )?(disabled|closed|deleted|deactivated)|"
    r"recipient(')?s? account (is |has been )?(blocked|disabled|closed|suspended)|"
    # Microsoft 365 answers so for an address its directory does not have (AS(201806281))
    r"5\.4\.1.{0,60}recipient address rejected: access denied|"
    r"the email account that you tried to reach (does not exist|is disabled)|"
    r"this user doesn'?t have an? .{1,40} account"
)

# Words that make a refusal certainly about the sender, whatever else the text says.
_SENDER_SIDE = _any(
    r"\bspf\b|\bdkim\b|\bdmarc\b|sender|mail from|spamhaus|block ?list|black ?list|"
    r"reputation|\bspam\b|relay|\bptr\b|reverse dns|\bblocked\b"
)

# The codes of a refusal of the sender's address (RFC 3463): about us, whatever the words.
_SENDER_CODES = ("5.1.7", "5.1.8", "4.1.7", "4.1.8")


def about_the_sender(code: str) -> bool:
    return code in _SENDER_CODES


# Enhanced status codes that are about our sender or message, never about the person.
_OURS_CODES = ("5.1.7", "5.1.8", "4.1.7", "4.1.8", "5.7.", "4.7.", "5.3.4", "5.2.3", "5.6.")


def category_of_code(
    code: str, *, hard: tuple[str, ...], policy: tuple[str, ...]
) -> BounceKind | None:
    """The category a status code gives alone: ``hard`` and ``policy`` are the settings
    ``hard_statuses`` and ``policy_statuses`` of ``[bounces]``."""
    if not code:
        return None
    if code.startswith("2."):
        return K.DELIVERED
    if any(code.startswith(p) for p in _OURS_CODES) or any(code.startswith(p) for p in policy):
        return K.POLICY
    if code.startswith(("5.2.2", "4.2.2")):
        return K.FULL
    if code.startswith("5.") and any(code == p or code.startswith(p) for p in hard):
        return K.HARD
    if code.startswith(("4.", "5.")):
        return K.SOFT
    return None
