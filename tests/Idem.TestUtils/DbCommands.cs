using System.Data.Common;

namespace Idem.TestUtils;

/// <summary>Plain ADO.NET for tests that set up or count rows beside the code under test, on any provider.</summary>
public static class DbCommands
{
    /// <summary>A command with <paramref name="sql"/>, in <paramref name="transaction"/>, with <c>@key</c> bound when given.</summary>
    public static DbCommand Create(DbConnection connection, DbTransaction? transaction, string sql, object? key = null)
    {
        var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        if (key is not null)
        {
            var parameter = command.CreateParameter();
            parameter.ParameterName = "@key";
            parameter.Value = key;
            command.Parameters.Add(parameter);
        }

        return command;
    }

    /// <summary>Runs <paramref name="sql"/> for its first column of its first row; <see cref="DBNull"/> comes back as null.</summary>
    public static async Task<object?> ScalarAsync(DbConnection connection, DbTransaction? transaction, string sql, object? key = null)
    {
        await using var command = Create(connection, transaction, sql, key);
        var value = await command.ExecuteScalarAsync();
        return value is DBNull ? null : value;
    }

    /// <summary>Runs <paramref name="sql"/> and returns the rows it changed.</summary>
    public static async Task<int> ExecuteAsync(DbConnection connection, DbTransaction? transaction, string sql, object? key = null)
    {
        await using var command = Create(connection, transaction, sql, key);
        return await command.ExecuteNonQueryAsync();
    }
}
