"""Live commerce and chat: the event schema, the gateway both transports use, and the features
behind it (chat and moderation, likes, gifts, products, flash sales and orders)."""
