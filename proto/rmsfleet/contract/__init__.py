"""The wire contract's Python face, imported by agent and collector alike: the host facts types
and their JSON form (`facts`), and every conversion between them and the protobuf messages
(`wire`). Needs only protobuf, so the agent's install stays grpcio and protobuf."""
