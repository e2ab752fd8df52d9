namespace Idem.Sqlite;
