"""Plain text derived from rendered HTML."""

from __future__ import annotations

from cjo_content.domain.plain_text import html_to_text


def test_tags_are_stripped_and_entities_decoded() -> None:
    assert html_to_text("<p>Fish &amp; chips &lt;3 &eacute;t&eacute;</p>") == "Fish & chips <3 été"


def test_whitespace_collapses_but_blocks_keep_their_lines() -> None:
    html = """
      <html><body>
        <h1>Welcome,
            Ann</h1>
        <p>First   paragraph
           goes on.</p>
        <div>line one</div><div>line two<br>line three</div>
        <span>same</span>
        <span>line</span>
      </body></html>"""
    assert html_to_text(html) == (
        "Welcome, Ann\n"
        "\n"
        "First paragraph goes on.\n"
        "\n"
        "line one\n"
        "line two\n"
        "line three\n"
        "same line")


def test_links_keep_their_url() -> None:
    html = ('<p>See <a href="https://shop.example/sale?a=1&amp;b=2">our <b>sale</b></a>, '
            '<a href="https://shop.example">https://shop.example</a> or '
            '<a href="mailto:help@shop.example">help@shop.example</a>.</p>'
            '<a href="https://shop.example/cart"><img src="cart.png" alt="Your cart"></a>'
            '<a href="https://shop.example/x"><img src="x.png"></a>'
            '<a href="#top">Top</a>')
    assert html_to_text(html) == (
        "See our sale (https://shop.example/sale?a=1&b=2), https://shop.example or "
        "help@shop.example.\n"
        "\n"
        "Your cart (https://shop.example/cart) https://shop.example/x Top")


def test_hidden_parts_and_comments_are_dropped() -> None:
    html = ("<html><head><title>Subject</title><style>p { color: red }</style></head>"
            "<body><!--[if mso]><p>Outlook only</p><![endif]-->"
            "<script>alert(1)</script><p>Shown</p></body></html>")
    assert html_to_text(html) == "Shown"


def test_lists_become_dashes() -> None:
    assert html_to_text("<p>Picks:</p><ul><li>Tea</li><li>Cake</li></ul>") == (
        "Picks:\n\n- Tea\n- Cake")


def test_plain_input_and_empty_input() -> None:
    assert html_to_text("just words\n  here") == "just words here"
    assert html_to_text("") == ""
