// The demo's own data: orders (issue 20: in the database, so each commits with its stored response), communities with
// unique slugs, their memberships and subscriptions, chats found by their participants, and the project of each build
// (issue 19). EF Core on a SQLite file (demo.db) by default, or PostgreSQL when ConnectionStrings:Demo is set.
using Microsoft.EntityFrameworkCore;

namespace Idem.Demo.DataLayer;

/// <summary>An order of <c>POST /orders</c>; serialized as the response (<c>id</c>, <c>item</c>, <c>amount</c>, <c>createdAt</c>).</summary>
internal sealed class Order
{
    public Guid Id { get; set; }

    public required string Item { get; set; }

    public decimal Amount { get; set; }

    public DateTimeOffset CreatedAt { get; set; }
}

internal sealed class Community
{
    public Guid Id { get; set; }

    public required string Name { get; set; }

    public string Slug { get; set; } = "";
}

internal sealed class Membership
{
    public Guid Id { get; set; }

    public Guid CommunityId { get; set; }

    public required string UserId { get; set; }

    public required string Role { get; set; }
}

internal sealed class Subscription
{
    public Guid Id { get; set; }

    public Guid CommunityId { get; set; }

    public required string UserId { get; set; }
}

internal sealed class Chat
{
    public Guid Id { get; set; }

    public required string ParticipantsKey { get; set; }
}

internal sealed class Project
{
    public Guid Id { get; set; }

    public required string BuildId { get; set; }
}

internal sealed class ProjectVersion
{
    public Guid Id { get; set; }

    public Guid ProjectId { get; set; }

    public int Number { get; set; }
}

internal sealed class DemoDb(DbContextOptions<DemoDb> options) : DbContext(options)
{
    public DbSet<Order> Orders => Set<Order>();

    public DbSet<Community> Communities => Set<Community>();

    public DbSet<Membership> Memberships => Set<Membership>();

    public DbSet<Subscription> Subscriptions => Set<Subscription>();

    public DbSet<Chat> Chats => Set<Chat>();

    public DbSet<Project> Projects => Set<Project>();

    public DbSet<ProjectVersion> ProjectVersions => Set<ProjectVersion>();

    protected override void OnModelCreating(ModelBuilder modelBuilder)
    {
        // The unique indexes are what make the helpers safe: the database, not the code, refuses the second copy.
        modelBuilder.Entity<Order>(e => e.ToTable("orders"));
        modelBuilder.Entity<Community>(e =>
        {
            e.ToTable("communities");
            e.Property(c => c.Slug).HasMaxLength(64).UseCollation(Database.IsNpgsql() ? "C" : null);
            e.HasIndex(c => c.Slug).IsUnique();
        });
        modelBuilder.Entity<Membership>(e =>
        {
            e.ToTable("memberships");
            e.HasIndex(m => new { m.CommunityId, m.UserId }).IsUnique();
            e.HasOne<Community>().WithMany().HasForeignKey(m => m.CommunityId);
        });
        modelBuilder.Entity<Subscription>(e =>
        {
            e.ToTable("subscriptions");
            e.HasOne<Community>().WithMany().HasForeignKey(s => s.CommunityId);
        });
        modelBuilder.Entity<Chat>(e =>
        {
            e.ToTable("chats");
            e.Property(c => c.ParticipantsKey).HasMaxLength(NaturalKey.DefaultMaxLength);
            e.HasIndex(c => c.ParticipantsKey).IsUnique();
        });
        modelBuilder.Entity<Project>(e =>
        {
            e.ToTable("projects");
            e.HasIndex(p => p.BuildId).IsUnique();
        });
        modelBuilder.Entity<ProjectVersion>(e =>
        {
            e.ToTable("project_versions");
            e.HasIndex(v => new { v.ProjectId, v.Number }).IsUnique();
            e.HasOne<Project>().WithMany().HasForeignKey(v => v.ProjectId);
        });
    }
}
