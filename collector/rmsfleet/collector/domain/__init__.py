"""Pure domain code: types, policies, capabilities and planning. Imports neither grpc nor SQLAlchemy."""
