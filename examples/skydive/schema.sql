-- The skydiving log of seed 000: jumpers, their devices (altimeters, cameras), their
-- jumps, groups of jumpers, and the formations a group jumps together.
-- Ferry's portable SQL subset: see docs/schema.md.

CREATE TABLE profiles (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,           -- the Ferry user this profile belongs to
    display_name varchar(80) NOT NULL,
    email text,
    license_number text,
    home_dropzone text,
    updated_at timestamptz
);

CREATE TABLE devices (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('altimeter', 'camera', 'phone', 'other')),
    serial text,
    name text,
    registered_at timestamptz
);

CREATE TABLE jump_log (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    device_id uuid REFERENCES devices(id),
    jump_number integer NOT NULL,
    jumped_at timestamptz NOT NULL,
    dropzone text,
    aircraft text,
    exit_altitude_ft integer,
    deployment_altitude_ft integer,
    freefall_seconds real,
    discipline text CHECK (discipline IN ('belly', 'freefly', 'wingsuit', 'canopy', 'tandem', 'other')),
    notes text,
    visible_to_connections boolean NOT NULL DEFAULT false,
    storage_url text,
    video_sha256 text,
    created_at timestamptz
);

CREATE TABLE groups (
    id uuid PRIMARY KEY,
    name varchar(120) NOT NULL,
    created_by uuid NOT NULL,
    created_at timestamptz
);

CREATE TABLE group_members (
    id uuid PRIMARY KEY,
    group_id uuid NOT NULL REFERENCES groups(id),
    user_id uuid NOT NULL,
    role text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
    joined_at timestamptz
);

CREATE TABLE formations (
    id uuid PRIMARY KEY,
    group_id uuid NOT NULL REFERENCES groups(id),
    name text NOT NULL,
    planned_for date,
    slots integer NOT NULL DEFAULT 4,
    notes text
);

CREATE TABLE formation_participants (
    id uuid PRIMARY KEY,
    formation_id uuid NOT NULL REFERENCES formations(id),
    user_id uuid NOT NULL,
    slot integer,
    jump_id uuid REFERENCES jump_log(id),
    group_id uuid REFERENCES groups(id) -- the formation's group, for the sharing rules
);

-- Whom a jumper shares their visible jumps with: user_id lets friend_id read the jumps
-- they mark visible_to_connections.
CREATE TABLE connections (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    friend_id uuid NOT NULL,
    created_at timestamptz
);
