"""cjo content: stores omnichannel content items and renders them per person with Liquid."""
