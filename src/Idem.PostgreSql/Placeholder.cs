namespace Idem.PostgreSql;
