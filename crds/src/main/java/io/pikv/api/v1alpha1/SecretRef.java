package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import io.fabric8.generator.annotation.Pattern;
import io.fabric8.generator.annotation.Required;

/** A Secret in the PiKVCluster's namespace, by name. */
@JsonInclude(JsonInclude.Include.NON_NULL)
public class SecretRef {

    @Required
    @Pattern("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    @io.fabric8.generator.annotation.Size(max = 253)
    @JsonPropertyDescription("Name of the Secret.")
    private String name;

    public SecretRef() {
    }

    public SecretRef(String name) {
        this.name = name;
    }

    public String getName() {
        return name;
    }

    public void setName(String name) {
        this.name = name;
    }
}
